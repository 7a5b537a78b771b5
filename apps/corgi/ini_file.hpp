// uWSGI ini files (--ini FILE[:SECTION], section [uwsgi] by default): the options corgi shares with
// uWSGI go through the settings schema like any other source; the others are warnings naming the
// option and its line. uWSGI's magic variables corgi can honour are expanded (%d %p %s %n %c %x %k
// %h %% %(placeholder) $(ENV)); any other is an error naming the line.
#pragma once

#include <corgi/core/settings.hpp>

#include <string>
#include <vector>

namespace corgi::cli {

void read_ini_file(settings_schema& schema, const std::string& spec,
                   std::vector<std::string>& warnings);

}  // namespace corgi::cli

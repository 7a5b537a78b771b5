# Turns a text file into a C++ source defining `std::string_view NAMESPACE::FUNCTION()` over a raw string
# literal, so the file ships inside the binary (the status page). Run as a script at build time:
#   cmake -DINPUT=page.html -DOUTPUT=page.cpp -DHEADER=status_page.hpp -DNAMESPACE=corgi::master
#         -DFUNCTION=status_page_html -P corgi_embed_text.cmake
# The literal's closing sequence must not occur in the text; the build fails, naming the file, if it does.
foreach(var INPUT OUTPUT HEADER NAMESPACE FUNCTION)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "corgi_embed_text.cmake: ${var} is not set")
  endif()
endforeach()
set(delimiter "corgi_embed")
file(READ "${INPUT}" text)
string(FIND "${text}" ")${delimiter}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains ')${delimiter}\"', which would end the raw string literal early")
endif()
get_filename_component(name "${INPUT}" NAME)
# C++ compilers need accept only 65536 characters in one literal (-Woverlength-strings, implied by -Wpedantic).
string(LENGTH "${text}" size)
if(size GREATER 65535)
  message(FATAL_ERROR "${INPUT} is ${size} bytes, more than one string literal may hold (65535)")
endif()
set(content "// Generated from ${name} by cmake/corgi_embed_text.cmake at build time. Do not edit.
#include \"${HEADER}\"

namespace ${NAMESPACE} {

std::string_view ${FUNCTION}() noexcept {
    static constexpr std::string_view text = R\"${delimiter}(${text})${delimiter}\";
    return text;
}

}  // namespace ${NAMESPACE}
")
# Written only when it changed, so an unchanged page does not recompile anything.
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" old)
  if(old STREQUAL content)
    return()
  endif()
endif()
file(WRITE "${OUTPUT}" "${content}")

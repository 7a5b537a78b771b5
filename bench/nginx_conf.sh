# Sourced by the benchmarks that run nginx: the start of its configuration, one worker in the foreground
# with everything it writes under one directory. `nginx_conf_start DIR` prints it up to the inside of
# `http { ... }`; the caller adds its server blocks and the closing brace.
nginx_conf_start() {
    cat <<NGINX
worker_processes 1;
daemon off;
master_process off;
error_log $1/nginx-error.log;
pid $1/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1; proxy_temp_path $1; fastcgi_temp_path $1; uwsgi_temp_path $1; scgi_temp_path $1;
  keepalive_requests 1000000;
NGINX
}

#!/bin/sh
# Renders every template under NGINX_ENVSUBST_TEMPLATE_DIR (default /etc/nginx/templates) whose
# name ends in NGINX_ENVSUBST_TEMPLATE_SUFFIX (default .template) into NGINX_ENVSUBST_OUTPUT_DIR
# (default /etc/nginx/conf.d), keeping sub-folders and dropping the suffix:
#   /etc/nginx/templates/snippets/proxy.conf.template -> /etc/nginx/conf.d/snippets/proxy.conf
# Only variables defined in the environment are substituted (and, when NGINX_ENVSUBST_FILTER is
# set, only those whose names match that regular expression), so nginx's own variables such as
# $host or $remote_addr stay as they are.
# Stream templates likewise: NGINX_ENVSUBST_STREAM_TEMPLATE_SUFFIX (default .stream-template)
# into NGINX_ENVSUBST_STREAM_OUTPUT_DIR (default /etc/nginx/stream-conf.d), which is then
# included from a stream {} block appended to /etc/nginx/nginx.conf.
set -e

ME=$(basename "$0")

entrypoint_log() {
  if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
    echo "$@"
  fi
}

# "${A} ${B} ..." for every variable in the environment whose name matches the filter.
defined_variables() {
  awk -v filter="${NGINX_ENVSUBST_FILTER:-}" 'BEGIN {
    for (name in ENVIRON) {
      if (name ~ /^[A-Za-z_][A-Za-z0-9_]*$/ && (filter == "" || name ~ filter)) {
        printf "${%s} ", name
      }
    }
  }'
}

# render TEMPLATE_DIR SUFFIX OUTPUT_DIR
render() {
  for template in $(find "$1" -follow -type f -name "*$2" -print | sort); do
    relative="${template#"$1/"}"
    output="$3/${relative%"$2"}"
    mkdir -p "$(dirname "$output")"
    entrypoint_log "$ME: rendering $template to $output"
    envsubst "$variables" < "$template" > "$output"
  done
}

template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
stream_suffix="${NGINX_ENVSUBST_STREAM_TEMPLATE_SUFFIX:-.stream-template}"
stream_output_dir="${NGINX_ENVSUBST_STREAM_OUTPUT_DIR:-/etc/nginx/stream-conf.d}"

[ -d "$template_dir" ] || exit 0
if [ ! -w "$output_dir" ] && ! mkdir -p "$output_dir" 2>/dev/null; then
  entrypoint_log "$ME: error: $output_dir is not writable; templates in $template_dir were not rendered" >&2
  exit 0
fi

variables="$(defined_variables)"
# One path per line: names may hold spaces, not newlines.
IFS='
'
render "$template_dir" "$suffix" "$output_dir"

if [ -n "$(find "$template_dir" -follow -type f -name "*$stream_suffix" -print -quit)" ]; then
  mkdir -p "$stream_output_dir"
  if [ -w /etc/nginx/nginx.conf ]; then
    if ! grep -q "include $stream_output_dir/\*.conf" /etc/nginx/nginx.conf; then
      entrypoint_log "$ME: adding a stream block for $stream_output_dir to /etc/nginx/nginx.conf"
      printf '\nstream {\n  include %s/*.conf;\n}\n' "$stream_output_dir" >> /etc/nginx/nginx.conf
    fi
    render "$template_dir" "$stream_suffix" "$stream_output_dir"
  else
    entrypoint_log "$ME: error: /etc/nginx/nginx.conf is not writable; stream templates were not rendered" >&2
  fi
fi

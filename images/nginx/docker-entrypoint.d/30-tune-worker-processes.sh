#!/bin/sh
# When NGINX_ENTRYPOINT_WORKER_PROCESSES_AUTOTUNE is set, sets worker_processes in
# /etc/nginx/nginx.conf to the CPUs this container may use (its CPU quota and cpuset, cgroup
# v1 or v2), instead of `auto`, which counts every CPU of the host.
set -e

ME=$(basename "$0")
[ -n "${NGINX_ENTRYPOINT_WORKER_PROCESSES_AUTOTUNE:-}" ] || exit 0

entrypoint_log() {
  if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
    echo "$@"
  fi
}

# CPUs in a cpuset list such as "0-3,6".
count_cpuset() {
  echo "$1" | tr ',' '\n' | awk -F- 'NF == 2 { n += $2 - $1 + 1; next } NF == 1 && $1 != "" { n++ } END { print n + 0 }'
}

cpus="$(nproc 2>/dev/null || echo 1)"

for file in /sys/fs/cgroup/cpuset.cpus.effective /sys/fs/cgroup/cpuset/cpuset.effective_cpus /sys/fs/cgroup/cpuset/cpuset.cpus; do
  if [ -r "$file" ]; then
    n="$(count_cpuset "$(cat "$file")")"
    if [ "$n" -gt 0 ] && [ "$n" -lt "$cpus" ]; then cpus="$n"; fi
    break
  fi
done

quota=""; period=""
if [ -r /sys/fs/cgroup/cpu.max ]; then
  read -r quota period < /sys/fs/cgroup/cpu.max
elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ] && [ -r /sys/fs/cgroup/cpu/cpu.cfs_period_us ]; then
  quota="$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)"
  period="$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
fi
case "$quota" in
  ''|max|-1) ;;
  *)
    if [ "${period:-0}" -gt 0 ]; then
      n=$(( (quota + period - 1) / period ))
      if [ "$n" -gt 0 ] && [ "$n" -lt "$cpus" ]; then cpus="$n"; fi
    fi
    ;;
esac

if [ ! -w /etc/nginx/nginx.conf ]; then
  entrypoint_log "$ME: /etc/nginx/nginx.conf is not writable; worker_processes left as it is"
  exit 0
fi
if grep -Eq '^[[:space:]]*worker_processes[[:space:]]' /etc/nginx/nginx.conf; then
  sed -i -E "s/^([[:space:]]*)worker_processes[[:space:]]+[^;]*;/\1worker_processes $cpus;/" /etc/nginx/nginx.conf
else
  printf 'worker_processes %s;\n' "$cpus" >> /etc/nginx/nginx.conf
fi
entrypoint_log "$ME: worker_processes set to $cpus"

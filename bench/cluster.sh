#!/bin/sh
# Several notifier daemons on one Redis, sharing one public port with
# reuseport: (docs/performance.rst: Scaling across cores). Started by the
# notifier-redis-*.toml bench targets; stopped with SIGTERM, which ends them all.
#   bench/cluster.sh DAEMONS RUN_DIR PUBLIC_PORT API_PORT REDIS_PORT ADMIN_TOKEN
# The daemons' api listeners are API_PORT, API_PORT+1, ...; Redis keeps
# nothing on disk.
set -eu
daemons=$1 run=$2 public=$3 api=$4 redis=$5 token=$6
pids=""
stop() {
  kill $pids 2>/dev/null || true
  wait
  exit 0
}
trap stop TERM INT
redis-server --port "$redis" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --logfile "$run/redis.log" &
pids="$!"
until redis-cli -p "$redis" ping >/dev/null 2>&1; do sleep 0.05; done
i=0
while [ "$i" -lt "$daemons" ]; do
  cat > "$run/notifier-$i.toml" <<CONF
[public]
endpoint = "reuseport:$public:interface=127.0.0.1"
allowed_origins = ["*"]

[api]
endpoint = "tcp:$((api + i)):interface=127.0.0.1"
admin_token = "$token"

[store]
url = "redis://127.0.0.1:$redis/0"

[centers]
history = 100
auto_create = false
max_message_bytes = 65536
CONF
  twistd -n --pidfile= --logfile="$run/notifier-$i.log" notifier --config "$run/notifier-$i.toml" &
  pids="$pids $!"
  i=$((i + 1))
done
wait

#!/usr/bin/env bash
# Makes sure PostgreSQL, Redis and RabbitMQ answer at the configured URLs:
# nothing to do if they answer; otherwise `docker compose up -d --wait` where a
# Docker engine answers; otherwise, as root on Debian/Ubuntu, installs the
# missing packages and starts them; otherwise says what to start.
set -euo pipefail

DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/crowdpass?sslmode=disable}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}

# hostport URL DEFAULT_PORT prints host:port of a URL.
hostport() {
	local rest=${1#*://}
	rest=${rest#*@}
	rest=${rest%%/*}
	rest=${rest%%\?*}
	case $rest in
	*:*) echo "$rest" ;;
	*) echo "$rest:$2" ;;
	esac
}

answers() { # host:port
	local host=${1%:*} port=${1##*:}
	timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null
}

declare -A addr=(
	[postgres]=$(hostport "$DATABASE_URL" 5432)
	[redis]=$(hostport "$REDIS_URL" 6379)
	[rabbitmq]=$(hostport "$AMQP_URL" 5672)
)

missing() {
	local out=()
	for s in postgres redis rabbitmq; do
		answers "${addr[$s]}" || out+=("$s")
	done
	echo "${out[@]:-}"
}

wait_for() { # service, seconds
	local deadline=$((SECONDS + $2))
	until answers "${addr[$1]}"; do
		if ((SECONDS > deadline)); then
			echo "services: $1 does not answer at ${addr[$1]} after $2s" >&2
			return 1
		fi
		sleep 1
	done
}

down=$(missing)
if [[ -z $down ]]; then
	exit 0
fi
echo "services: not answering: $down"

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
	echo "services: starting them with docker compose"
	# shellcheck disable=SC2086
	docker compose up -d --wait $down
	exit 0
fi

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
	declare -A pkg=([postgres]=postgresql [redis]=redis-server [rabbitmq]=rabbitmq-server)
	need=()
	for s in $down; do
		dpkg -s "${pkg[$s]}" >/dev/null 2>&1 || need+=("${pkg[$s]}")
	done
	if ((${#need[@]})); then
		echo "services: installing ${need[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
	fi
	for s in $down; do
		echo "services: starting $s"
		case $s in
		postgres)
			version=$(ls /etc/postgresql | sort -n | tail -1)
			pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
			# A fresh cluster trusts local connections only through the socket.
			hba=/etc/postgresql/$version/main/pg_hba.conf
			if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
				sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
				pg_ctlcluster --skip-systemctl-redirect "$version" main reload
			fi
			;;
		redis)
			mkdir -p /var/lib/redis /var/log/redis
			redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
				--dir /var/lib/redis --logfile /var/log/redis/ci.log
			;;
		rabbitmq) rabbitmq-server -detached ;;
		esac
	done
	for s in $down; do
		wait_for "$s" 90
	done
	if [[ $down == *rabbitmq* ]] && command -v rabbitmq-diagnostics >/dev/null; then
		rabbitmq-diagnostics -q check_running >/dev/null 2>&1 || sleep 5
	fi
	exit 0
fi

cat >&2 <<MSG
services: cannot start $down here.
Start them yourself, or run 'docker compose up -d --wait postgres redis rabbitmq':
  PostgreSQL at ${addr[postgres]} (DATABASE_URL)
  Redis      at ${addr[redis]} (REDIS_URL)
  RabbitMQ   at ${addr[rabbitmq]} (AMQP_URL)
MSG
exit 1

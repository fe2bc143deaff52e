#!/usr/bin/env bash
# Runs Parley scaled out on this machine, without Docker: N gateways on the
# local RabbitMQ and Redis behind nginx (the docker compose configuration),
# until Ctrl-C. Flags go to cmd/parley-cluster (-gateways 3 -port 8080 ...;
# -h lists them); PARLEY_* variables set here are passed to the gateways.
#
#   ./scripts/cluster.sh -gateways 3
#   PARLEY_SEND_RATE=100 ./scripts/cluster.sh -port 9000
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec go run ./cmd/parley-cluster "$@"

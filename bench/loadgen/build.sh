#!/bin/sh
# Build bench/loadgen/bin/loadgen offline (Debian's Go and gorilla/websocket).
set -eu
cd "$(dirname "$0")"
export GOPROXY=off GOSUMDB=off GOFLAGS=-mod=mod CGO_ENABLED=0
mkdir -p bin
go build -trimpath -o bin/loadgen .
echo "built $(pwd)/bin/loadgen"

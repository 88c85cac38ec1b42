#!/bin/sh
# busybox httpd as PID 1 ignores SIGTERM; shut down on it as a real app would.
echo "example app starting"
trap 'kill $pid; exit 0' TERM
httpd -f -p 8080 -h /www & pid=$!
wait $pid

#!/bin/sh
# Proctor's sample proc: greets NAME three times, a second apart, so its log can be
# watched live. Args and secrets arrive as environment variables.
set -eu
for i in 1 2 3; do
  echo "Hello, ${NAME}! (${i}/3)"
  sleep 1
done
echo "Goodbye from ${PROCTOR_EXECUTION_NAME:-say-hello-world}"

#!/bin/sh
# Stands for the customer's provisioning script. It fails once (a flaky service, say),
# and the task's `retries: 2` makes the agent run it again.
marker="$BOOTLINE_STATE_DIR/provision-attempted"
if [ ! -e "$marker" ]; then
  touch "$marker"
  echo "provisioning service not reachable yet" >&2
  exit 75
fi
for i in 1 2 3 4; do printf 'PROGRESS %d\n' $((i * 25)) > "$BOOTLINE_PROGRESS"; sleep 0.3; done
echo "device $BOOTLINE_DEVICE_ID provisioned on $BOOTLINE_TARGET"

#!/bin/sh
# An after-hook, as a line's existing report script would be: runs after every task.
echo "$(date -u +%FT%TZ) $BOOTLINE_EVENT $BOOTLINE_TASK $BOOTLINE_STATUS ${BOOTLINE_PROGRESS_PERCENT}%" >> "$BOOTLINE_STATE_DIR/hooks.log"

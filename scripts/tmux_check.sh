#!/usr/bin/env bash
# A real-terminal check of `edgekit chat`: start it in a detached tmux pane, type a message, wait for
# the reply, capture the screen, press Esc/Ctrl+Q, and check the pane showed the reply and the stats.
#   bash scripts/tmux_check.sh DEPLOYMENT_DIR [capture.txt]
set -euo pipefail
dep=${1:?usage: tmux_check.sh DEPLOYMENT_DIR [capture.txt]}
capture=${2:-/tmp/edgekit-chat-capture.txt}
edgekit=${EDGEKIT_BIN:-$(dirname "$0")/../.venv/bin/edgekit}
session=edgekit-check-$$
command -v tmux >/dev/null || { echo "tmux_check: tmux is not installed (apt-get install tmux)" >&2; exit 4; }
export EDGEKIT_DATA=${EDGEKIT_DATA:-$(mktemp -d)}
tmux new-session -d -s "$session" -x 120 -y 34 "$edgekit chat '$dep'"
trap 'tmux kill-session -t "$session" 2>/dev/null || true' EXIT
for _ in $(seq 60); do  # wait for the prompt to be ready
  tmux capture-pane -p -t "$session" | grep -q "Message (Enter to send" && break
  sleep 0.5
done
tmux send-keys -t "$session" "What is the capital of France?" Enter
for _ in $(seq 120); do  # wait for the reply to finish: the mean ms/token appears
  tmux capture-pane -p -t "$session" | grep -q "mean [0-9]" && break
  sleep 0.5
done
sleep 2
tmux capture-pane -p -t "$session" > "$capture"
tmux send-keys -t "$session" C-q
sleep 1
grep -q "capital of" "$capture" && grep -q "first token [0-9]" "$capture" && grep -q "tokens/s [0-9]" "$capture" \
  || { echo "tmux_check: the pane did not show a reply with its figures; see $capture" >&2; exit 1; }
ls "$EDGEKIT_DATA"/conversations/*.jsonl >/dev/null || { echo "tmux_check: no conversation saved" >&2; exit 1; }
echo "tmux_check: ok (pane captured in $capture)"

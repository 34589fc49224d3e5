#!/usr/bin/env bash
# Start `vllm serve` on a tiny Llama checkpoint with BPO's tokenizer and run bpo-local against it.
# Needs a GPU and `pip install vllm`. Usage: scripts/check_vllm.sh CHECKPOINT_DIR [PORT]
set -euo pipefail
checkpoint=${1:?usage: scripts/check_vllm.sh CHECKPOINT_DIR [PORT]}
port=${2:-8765}
url=http://127.0.0.1:$port
vllm serve "$checkpoint" --port "$port" --max-model-len 2048 --gpu-memory-utilization 0.3 >/tmp/vllm-check.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 300); do curl -sf "$url/version" >/dev/null && break; sleep 1; done
bpo-local doctor --server "$url" --json | tee /tmp/vllm-doctor.json
python - "$url" <<'PY'
import json, sys
from bpo_local.optimizer import connect
opt = connect(sys.argv[1], kind="vllm")
request = opt._request("how do I bake bread", opt.preset("aggressive", max_tokens=48), 3)
gen = opt.backend.generate(request)
for _ in gen:
    pass
newline = opt.backend.token_for_piece("\n")
for c in gen.result.completions:
    assert newline not in c.tokens and request.stop_tokens.isdisjoint(c.tokens), c
    assert len(c.tokens) >= request.min_new_tokens or c.finish_reason == "length", c
print(json.dumps(opt.optimize("how do I bake bread", temperature=0, max_tokens=24).to_dict()))
print("vllm checks passed")
PY

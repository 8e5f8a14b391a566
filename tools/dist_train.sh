#!/usr/bin/env bash
# tools/dist_train.sh CONFIG GPUS [args]: torchrun over GPUS processes on this node.
# On hosts without GPUs, `import mmdat` (mmdat/compat.py) runs GPUS CPU processes with the
# gloo backend: no flags needed. Environment: PORT (29500), NNODES (1), NODE_RANK (0),
# MASTER_ADDR (127.0.0.1), PYTHON (the interpreter, e.g. .venv/bin/python).
# Several nodes: run it on each, with the same NNODES, MASTER_ADDR (node 0's address) and PORT
# and NODE_RANK 0..NNODES-1, e.g. on the second of two nodes
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 PORT=29500 tools/dist_train.sh CONFIG 8
# (GPUS is per node; the data is split over all NNODES*GPUS processes).
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
DIR="$(cd "$(dirname "$0")" && pwd -P)"
PYTHON=${PYTHON:-python}

PYTHONPATH="$DIR/..":$PYTHONPATH \
$PYTHON -m torch.distributed.run \
    --nnodes=$NNODES --node_rank=$NODE_RANK --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS --master_port=$PORT \
    "$DIR/train.py" "$CONFIG" --launcher pytorch "${@:3}"

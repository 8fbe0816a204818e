# Recipes run inside the project's virtualenv; call them through ./dev (it sets that up).

set shell := ["bash", "-euo", "pipefail", "-c"]

config := "config/relay.toml"

# Run the relay; starts a local JetStream nats-server first if none answers at the config's URL.
run cfg=config:
    python -m relay.natsd --config {{cfg}} --store data/nats
    relay run -c {{cfg}}

# Lint, then the whole test suite (a real nats-server and loopback WebSocket servers).
test *args:
    ruff check .
    ruff format --check .
    pytest {{args}}

# Validate a config and print the resolved plan.
check cfg=config:
    relay check -c {{cfg}}

# Everything offline: nats-server, a replay venue, the relay, and a few published messages.
demo:
    python examples/demo.py

# Replay venue at full speed into the relay and a real nats-server; prints the figures.
bench *args:
    python bench/bench.py {{args}}

# Our codecs vs cryptofeed's handlers on the same capture frames (cryptofeed in a throwaway venv).
bench-peer *args:
    python bench/peer_cryptofeed.py {{args}}

# One hour at a paced 10k frames/s; fails if the relay's RSS or open fds grow 5 % or it falls behind.
soak *args:
    python bench/soak.py {{args}}

# The relay's RSS with 1,000 streams over Binance, OKX and Bybit; fails above 250 MB.
bench-memory *args:
    python bench/memory.py {{args}}

# Format the code.
fmt:
    ruff format .
    ruff check --fix .

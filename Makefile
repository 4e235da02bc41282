# The two set-up commands of the README. Both work on a fresh Debian 12 machine, as root.
.PHONY: demo test deps build bench

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

deps:
	bash scripts/deps.sh

build:
	cargo build --release

bench: build
	bash benches/runtime.sh

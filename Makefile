# The two set-up commands of the README. Both work on a fresh Debian 12 machine, as root.
.PHONY: demo test deps build runtime-static bench

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

deps:
	bash scripts/deps.sh

build:
	cargo build --release
	$(MAKE) runtime-static

# berth-runtime linked statically (glibc's libc.a, as runc's release binaries are): no dynamic
# loader and no shared libc mapped at each of its execs; ~0.8 ms less per `run` and 0.4 MiB
# less peak RSS here (benches/README.md). Replaces target/release/berth-runtime; a later plain
# `cargo build --release` links it dynamically again.
runtime-static:
	cargo rustc --release -p berth-cli --bin berth-runtime -- -C target-feature=+crt-static

bench: build
	bash benches/runtime.sh

.PHONY: demo test bench

# Sets up a fresh Debian 12 machine, builds, and plans the built-in example stream.
demo:
	scripts/setup.sh
	scripts/demo.sh

# The whole test suite (what .ci/run calls).
test:
	scripts/test.sh

# The benchmarks quoted in the README: planner, encapsulation (the minbase and a
# desktop-sized tree, made once with apt), controller.
bench:
	cargo bench --bench controller
	cargo build --release --quiet
	for n in 64 128; do \
	  for h in fcos-stable-2019-2021 fcos-testing-devel-2019-2021; do \
	    target/release/strata bench replay --history ../shared/bench/$$h.jsonl.gz -n $$n \
	      --strategy all --allow-over-127 2>/dev/null | tail -8; \
	  done; \
	done
	target/release/strata bench plan --components 2000 --priors 100
	target/release/strata bench plan --components 20000 --priors 100 --runs 1
	target/release/strata bench plan --components 2500 --priors 50
	target/release/strata bench build --allow-special-files \
	  --rootfs $$(scripts/fixtures.sh >&2; echo /var/cache/strata-test/bookworm-minbase)
	target/release/strata bench build --allow-special-files --rootfs $$(scripts/desktop-tree.sh)

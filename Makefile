# The two commands of the README. Both set everything up first (idempotent).
.PHONY: run test setup bench

run:
	@scripts/setup.sh app
	@.venv/bin/immersions

test:
	@scripts/setup.sh test
	@scripts/test.sh

setup:
	@scripts/setup.sh test

bench:
	@scripts/setup.sh bench
	@.venv/bin/python tests/bench/bench_cqt.py
	@.venv/bin/python tests/bench/bench_model.py
	@.venv/bin/python tests/bench/bench_layout.py
	@.venv/bin/python tests/bench/bench_app.py
	@.venv/bin/python tests/bench/bench_midi.py

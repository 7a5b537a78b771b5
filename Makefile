# The two commands a newcomer needs: `make run` (install, build, start the demo on http://127.0.0.1:8000) and
# `make test` (install, build, run every test through ctest). The rest are for CI and benchmarks.
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?=
CTEST_FLAGS ?=

.PHONY: run test deps build test-sanitize fuzz bench clean

# The demo: C++ routes and built-in targets from examples/demo.json, a Flask app and the async-resources WSGI app
# mounted beside them in the same URL map.
run: build
	./$(BUILD)/bin/corgi --config examples/demo.json \
	  --mount /flask=examples/flask_app.py:app --mount /async=examples/wsgi_async_resources.py

test: build
	@scripts/install-deps.sh --test
	cd $(BUILD) && ctest --output-on-failure $(CTEST_FLAGS)

deps:
	@scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

# clang + AddressSanitizer + UndefinedBehaviorSanitizer (fibers switch through ucontext so ASan follows them).
test-sanitize: deps
	@scripts/install-deps.sh --test
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
	  -DCORGI_SANITIZE=ON -DCORGI_BUILD_FUZZERS=ON $(CMAKE_FLAGS)
	cmake --build build-asan -j$(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=0:detect_stack_use_after_return=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -L 'unit|integration|python' $(CTEST_FLAGS)

bench: build
	bench/run.sh

clean:
	rm -rf $(BUILD) build-asan

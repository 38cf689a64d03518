# TileLabel: every target installs what it needs first (scripts/setup.sh, idempotent).
PY      := .venv/bin/python
SAMPLE  := resources/sample/gorinchem_0.25m_rgb.tif
DEMO    := out/demo/gorinchem.gpkg
UCM     ?= ../shared/data/ucmerced-ml
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup demo test plugin screenshots default-model benchmarks model-benchmarks clean

setup:
	@bash scripts/setup.sh

# Annotate the sample raster with the default model; prints where the results are.
demo: setup
	@mkdir -p $(dir $(DEMO))
	$(PY) -m engine.cli annotate $(SAMPLE) --out $(DEMO)

# The whole test suite (engine and QGIS tests, headless).
test: setup
	$(PY) -m pytest -q

# The installable QGIS plugin zip (out/tilelabel.zip).
plugin: setup
	$(PY) scripts/build_plugin.py out/tilelabel.zip

# docs/screenshot_*.png from the real plugin under offscreen QGIS.
screenshots: setup
	$(PY) scripts/screenshots.py

# Rebuild engine/resources/models/default from the UC Merced multi-label dev data
# (recipes/default.toml: the whole network fine-tuned, about an hour on 2 CPU cores).
default-model: setup
	$(PY) -m engine.train.default_model --dataset $(UCM) --out out/default-model
	rm -rf engine/resources/models/default && cp -r out/default-model engine/resources/models/default

# Speed and memory figures (read ../shared/data; not part of the tests).
benchmarks: setup
	$(PY) benchmarks/annotate_speed.py
	$(PY) benchmarks/annotate_memory.py
	$(PY) benchmarks/sentinel2_scene.py
	$(PY) benchmarks/default_model_accuracy.py
	$(PY) benchmarks/river_tiles.py
	$(PY) benchmarks/hro_chips.py
	$(PY) benchmarks/partial_tiles.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/annotate_cluster.py

# The paper models trained on real data (about 1.5 hours on a 2-core CPU).
model-benchmarks: setup
	$(PY) benchmarks/model_comparison.py
	$(PY) benchmarks/cmgm_ablation.py
	$(PY) benchmarks/cmgm_attention_figures.py
	$(PY) benchmarks/kbranch_bigearthnet.py --annotate
	$(PY) benchmarks/kbranch_reference_map.py

clean:
	rm -rf out .pytest_cache

# Puts this folder on sys.path (pytest's rootdir conftest), so the tests import
# zoo_example_plugin from the source tree even when the package is not installed.

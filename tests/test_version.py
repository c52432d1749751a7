"""The version has one source: the package metadata that pyproject.toml sets."""

import importlib.metadata

import reftlab


def test_version_comes_from_the_package_metadata():
    assert reftlab.__version__ == importlib.metadata.version("reftlab")

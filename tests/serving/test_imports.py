"""serving/ runs on devices without TensorFlow or Keras: prove it imports neither."""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALLOWED = {"numpy", "onnxruntime", "sentencepiece", "serving", "tqdm"}


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def test_serving_sources_import_only_allowed_packages():
    found = set()
    for directory, _, files in os.walk(os.path.join(ROOT, "serving")):
        for name in files:
            if name.endswith(".py"):
                found |= set(_imports(os.path.join(directory, name)))
    third_party = {m for m in found if m not in sys.stdlib_module_names}
    assert third_party <= ALLOWED, third_party - ALLOWED


BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx', 'keras_s2s'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import serving, serving.search
import pkgutil
for module in pkgutil.walk_packages(serving.__path__, 'serving.'):
    __import__(module.name)
assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules)
print('ok')
"""


def test_serving_imports_with_tensorflow_and_keras_blocked():
    result = subprocess.run([sys.executable, "-c", BLOCKER], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

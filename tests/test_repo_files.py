"""Files a user of the repository relies on: the license, the citation, and docs the code points to."""
import pathlib
import re
import subprocess
import tomllib

import pytest

yaml = pytest.importorskip("yaml")

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAPERS = ('Information Dropout: Learning Optimal Representations Through Noisy Computation',
          'Exact Rate-Distortion in Autoencoders via Echo Noise',
          'Information Plane Analysis for Dropout Neural Networks')


def test_license_is_the_one_pyproject_declares():
  declared = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['license']
  assert declared == 'Apache-2.0'
  text = (ROOT / 'LICENSE').read_text()
  assert 'Apache License' in text and 'Version 2.0, January 2004' in text
  assert text.startswith('Copyright') and 'the infodrop-jax authors' in text.splitlines()[0]


def test_citation_cites_the_three_papers():
  citation = yaml.safe_load((ROOT / 'CITATION.cff').read_text())
  assert citation['cff-version'] == '1.2.0' and citation['license'] == 'Apache-2.0'
  assert [r['title'] for r in citation['references']] == list(PAPERS)
  first_authors = [r['authors'][0]['family-names'] for r in citation['references']]
  assert first_authors == ['Achille', 'Brekelmans', 'Adilova']
  assert '1611.01353' in citation['references'][0]['url']


def test_package_docs_point_inside_the_repository():
  """Docstrings and comments name docs in the repo (docs/...), never files beside the checkout."""
  for path in sorted((ROOT / 'infodrop_jax').rglob('*.py')):
    text = path.read_text(encoding='utf-8')
    assert not re.search(r'shared/REFERENCE|REFERENCE\.md', text), path
    for doc in re.findall(r'\bdocs/[\w./-]+\.md\b', text):
      assert (ROOT / doc).is_file(), f'{path} points to {doc}, which does not exist'
  originals = (ROOT / 'docs' / 'ORIGINALS.md').read_text(encoding='utf-8')
  for topic in ('All-CNN-32', 'All-CNN-96', 'Original bugs we fix', 'Echo noise', 'process_cifar.py'):
    assert topic in originals


@pytest.mark.parametrize('script', ['.ci/run', 'benchmarks/gpu_prepare.sh', 'benchmarks/gpu_session.sh'])
def test_shell_scripts_parse(script):
  """A syntax error in the GPU session script would cost a lent GPU's minutes before anyone saw it."""
  result = subprocess.run(['bash', '-n', str(ROOT / script)], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr


def test_gpu_session_refuses_an_unknown_part():
  result = subprocess.run(['bash', str(ROOT / 'benchmarks/gpu_session.sh'), 'everything'], capture_output=True,
                          text=True, check=False)
  assert result.returncode == 2 and 'usage' in result.stderr

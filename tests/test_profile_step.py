"""benchmarks/profile_step.py's trace summary: ops matched to the compiled HLO, categorised, counted once per step."""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'benchmarks'))
import profile_step  # pylint: disable=g-import-not-at-top,wrong-import-position

_HLO = '''
ENTRY %main {
  %convolution.1 = f32[8,16,16,4]{3,2,1,0} convolution(%p0, %p1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(step)/jvp(Net)/conv/conv_general_dilated"}
  %convolution.2 = f32[4,3,3,4]{3,2,1,0} convolution(%t0, %t1), window={size=16x16 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(step)/transpose(jvp(Net))/conv/conv_general_dilated"}
  %convolution.3 = f32[8,16,16,4]{3,2,1,0} convolution(%g, %k), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(step)/transpose(jvp(Net))/conv/conv_general_dilated"}
  %transpose_copy_fusion.4 = f32[4,16,16,8]{3,2,1,0} fusion(%a), kind=kLoop, calls=%fused_computation.4
  %negate_sqrt_fusion.5 = f32[8,16,16,4]{3,2,1,0} fusion(%u), kind=kLoop, calls=%c5, metadata={op_name="jit(step)/jvp(Net)/noise/jit(_normal)/erf_inv"}
  ROOT %custom-call.6 = f32[4,3,3,4]{3,2,1,0} custom-call(%x, %y), custom_call_target="__cudnn$convBackwardFilter"
}
'''


def _event(name, dur_us, **args):
  return {'ph': 'X', 'name': name, 'dur': dur_us, 'args': args}


def test_cpu_style_events_are_summed_per_step_and_categorised():
  events = [_event('convolution.1', 2000), _event('convolution.1', 2000), _event('convolution.2', 6000),
            _event('convolution.3', 1000), _event('transpose_copy_fusion.4', 4000), _event('negate_sqrt_fusion.5', 500),
            _event('PjitFunction(step)', 99000), {'ph': 'i', 'name': 'convolution.1'}]
  categories, ops = profile_step.summarize(events, _HLO, steps=2)
  assert categories == pytest.approx({'convolution, forward': 2.0, 'convolution, kernel gradient': 3.0,
                                      'convolution, input gradient': 0.5, 'transpose / copy': 2.0,
                                      'random numbers': 0.25})
  assert [name for _, name, *_ in ops][:2] == ['convolution.2', 'convolution.1']


def test_gpu_style_kernel_events_count_through_their_hlo_op():
  events = [_event('sm90_xmma_wgrad_kernel', 3000, hlo_op='custom-call.6'), _event('cudaLaunchKernel', 50)]
  categories, _ = profile_step.summarize(events, _HLO, steps=1)
  assert categories == pytest.approx({'convolution, kernel gradient': 3.0})

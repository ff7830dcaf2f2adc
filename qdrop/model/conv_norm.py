"""A conv followed by a normalisation that cannot be folded into its weights (GroupNorm), as one quantized unit."""

from typing import Optional

from torch import Tensor, nn

from qdrop.quantization import QuantizedUnit, QuantizerConfig, weight_quantized


class QuantizedConvNormAct(QuantizedUnit):
    """A ConvModule conv -> GroupNorm -> activation: the conv's weights are fake-quantized (``module``), the norm
    (``norm``) computes in float on the conv's output, the activation (``activation``: ReLU or None) follows, and
    the output quantizer, if any, quantizes what the next layer reads.

    GroupNorm normalises each image with statistics of its own feature map (over the padded map), so unlike a
    BatchNorm it has no fixed per-channel affine map to fold into the conv. The unit is reconstructed as a whole.

    Args:
        conv: the float conv (its parameters are shared, not copied).
        norm: the float normalisation layer (kept as it is).
        activation: ReLU or None.
        w_cfg: the conv's weight quantizer settings.
        a_cfg: the output quantizer's settings (needed when ``qoutput``).
        qoutput: give the unit an output quantizer.
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        norm: nn.Module,
        activation: Optional[nn.Module],
        w_cfg: QuantizerConfig,
        a_cfg: Optional[QuantizerConfig] = None,
        qoutput: bool = True,
    ):
        super().__init__(qoutput, a_cfg)
        self.module = weight_quantized(conv, w_cfg)
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        out = self.norm(self.module(x))
        if self.activation is not None:
            out = self.activation(out)
        return self.quantize_output(out)

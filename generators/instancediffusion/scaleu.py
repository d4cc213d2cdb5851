"""ScaleU: InstanceDiffusion's learned re-weighting of the UNet decoder's inputs.

Before each of the decoder's residual blocks the reference (frank-xwang/InstanceDiffusion@722900e,
ldm/modules/diffusionmodules/openaimodel.py, `UNetModel.forward_single_input`, ScaleU branch)
scales the main features channel-wise by tanh(b_i) + 1 and the skip connection's low
frequencies by tanh(s_i) + 1 (`Fourier_filter(threshold=1)`: the 2x2 centre of the shifted 2-D
spectrum), with b_i, s_i the checkpoint's `scaleu_b_{i}` and `scaleu_s_{i}`. Output block i of
the reference is resnet i % 3 of up block i // 3 in diffusers; a forward pre-hook on that resnet
splits its concatenated input back into the two parts.
"""

from __future__ import annotations

import torch
from torch import fft, nn


def fourier_filter(x: torch.Tensor, threshold: int, scale: torch.Tensor) -> torch.Tensor:
    """Multiply the centred 2*threshold square of x's shifted spectrum by `scale`."""
    dtype = x.dtype
    _, _, height, width = x.shape
    if (width & (width - 1)) or (height & (height - 1)) or x.device.type == "cpu":
        # Non-power-of-two sizes (the reference's rule) and CPU FFTs need float32.
        x = x.float()
    freq = fft.fftshift(fft.fftn(x, dim=(-2, -1)), dim=(-2, -1))
    mask = torch.ones(x.shape, device=x.device)
    row, col = height // 2, width // 2
    mask[..., row - threshold: row + threshold, col - threshold: col + threshold] = scale.float()
    out = fft.ifftn(fft.ifftshift(freq * mask, dim=(-2, -1)), dim=(-2, -1)).real
    return out.to(dtype)


class ScaleU(nn.Module):
    """The 2 x n ScaleU parameters, named `b_{i}` and `s_{i}` (checkpoint `scaleu_b_{i}`, `scaleu_s_{i}`)."""

    def __init__(self, channels: list[int]):
        super().__init__()
        self.channels = list(channels)
        for i, c in enumerate(self.channels):
            self.register_parameter(f"b_{i}", nn.Parameter(torch.zeros(c)))
            self.register_parameter(f"s_{i}", nn.Parameter(torch.zeros(1)))

    def apply_to(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        """The concatenated [main, skip] input of decoder block `index`, re-weighted."""
        b = torch.tanh(getattr(self, f"b_{index}")) + 1
        s = torch.tanh(getattr(self, f"s_{index}")) + 1
        c = self.channels[index]
        main = hidden[:, :c] * b.to(hidden.dtype).view(1, -1, 1, 1)
        skip = fourier_filter(hidden[:, c:], threshold=1, scale=s)
        return torch.cat([main, skip], dim=1)


def decoder_main_channels(unet: nn.Module) -> list[int]:
    """Channels of the main input of each decoder resnet (before the skip is concatenated)."""
    channels = []
    prev = unet.config.block_out_channels[-1]
    for block in unet.up_blocks:
        out = block.resnets[0].out_channels
        channels += [prev] + [out] * (len(block.resnets) - 1)
        prev = out
    return channels


def install_scaleu(unet: nn.Module, scaleu: ScaleU) -> None:
    """Attach `scaleu` to the UNet (as `unet.scaleu`) and hook it before every decoder resnet."""
    unet.scaleu = scaleu
    resnets = [resnet for block in unet.up_blocks for resnet in block.resnets]
    if len(resnets) != len(scaleu.channels):
        raise ValueError(f"ScaleU has {len(scaleu.channels)} entries, the UNet {len(resnets)} decoder blocks")
    for index, resnet in enumerate(resnets):
        resnet.register_forward_pre_hook(_hook(scaleu, index))


def _hook(scaleu: ScaleU, index: int):
    def pre_hook(module: nn.Module, args: tuple) -> tuple:
        return (scaleu.apply_to(index, args[0]), *args[1:])

    return pre_hook

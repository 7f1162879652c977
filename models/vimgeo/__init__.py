"""VimGeo: Vision Mamba cross-view geo-localization.

Training, evaluation and ONNX export for the encoder that vimgeo runs onboard.
Modules: ``scan`` (selective scan), ``model`` (Vim backbone and VimGeo), ``losses``,
``dataset`` and ``transforms`` (University-1652), ``evaluate``, ``config``, ``train``, ``summary``.
"""

__version__ = "0.1.0"

"""Serving GGUF model versions with llama.cpp: quantized weights and
llama.cpp's CPU kernels under the platform's own scheduler, sampler,
stop strings and output filters (see ``engine``), and turning a
transformers folder into a GGUF file (see ``export``).
"""

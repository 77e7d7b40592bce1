"""Speech: dictation (audio in, text out) and reading answers aloud.

``audio`` turns a recording that arrives in pieces into 16 kHz mono PCM,
``recognisers`` turns PCM into text (pocketsphinx by default, Whisper
through transformers when one is registered), ``worker`` is the process
that runs them for the sockets, ``client`` is what the web calls, and
``synthesis`` speaks text with espeak-ng. Nothing here imports Django.
"""

"""Exports of a code store to engines beyond one machine.

- :mod:`hashkit.export.milvus`: a Milvus collection of binary vectors (Hamming distance),
  with the store's ids, paths and labels; needs the optional extra ``hashkit[milvus]``.
"""

"""RansomEye release pipeline: shared library behind the entry-point scripts.

Layers, from the inside out:

* ``products``   – the product declaration (what each bundle holds), parsed once.
* ``errors``     – the one exception root, split by meaning.
* ``archive``, ``cargo``, ``minisign``, ``keys``, ``staging`` – adapters.
* ``release/builder/*.py``, ``release/manifests/*.py`` – thin entry points.
"""

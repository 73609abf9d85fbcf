"""Content Credentials (C2PA): every output carries its own signed provenance.

* :mod:`.chain` makes a certificate chain for development and trials;
* :mod:`.manifest` turns a processing step into a C2PA manifest (actions from
  the pipeline, the input as parent ingredient bound by its sha256, imgpipe's
  own ``org.imgpipe.step`` assertion);
* :mod:`.signing` loads the signing key from settings and signs encoded bytes;
* :mod:`.embedded` tells from the bytes whether an input may carry a manifest;
* :mod:`.reading` validates a file (signature, hash binding, trust) and
  summarises its chain of manifests;
* :mod:`.agreement` compares a stored output's credentials with its PROV record;
* :mod:`.commands`: ``imgpipe credentials init`` and ``imgpipe verify --file``.

Invariants: signing never re-encodes the image; the bytes libvips produced
(the *payload*) stay byte-for-byte in the signed file outside the manifest
segment, and their sha256 is carried in the signed ``org.imgpipe.step``
assertion. c2pa objects are native handles: they are made per thread, never
shared across ``fork()``, and their calls release the GIL.
"""

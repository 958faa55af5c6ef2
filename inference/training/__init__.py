"""Train StellarByte-mini, the small chat model bundled with StellarChat.

Django-free on purpose: ``python -m inference.training`` and ``manage.py train_demo_model``
run the same code, and neither needs a database or settings.
"""

from __future__ import annotations

"""Django settings for the inference package alone, for a GPU machine that has PyTorch and
transformers but not the web stack (no channels, daphne or database drivers):

    DJANGO_SETTINGS_MODULE=bench.gpu.settings python3 bench/engines.py --device cuda

Only Django itself (with asgiref and sqlparse) must be installed there besides the model's
libraries: ``inference`` reads these settings and nothing else of the project."""

SECRET_KEY = "bench-gpu"  # noqa: S105 (no web server runs with these settings)
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
STELLARCHAT_MODEL = "inference/bundled/stellarbyte-mini"
STELLARCHAT_DEVICE = "cuda"
STELLARCHAT_DTYPE = "auto"
STELLARCHAT_TRUST_REMOTE_CODE = False
STELLARCHAT_MAX_BATCH = 32
STELLARCHAT_TORCH_THREADS = 0
STELLARCHAT_MODEL_PROCESS = False
STELLARCHAT_BACKEND = "transformers"
STELLARCHAT_METRICS_TOKEN = ""
STELLARCHAT_WORKER_METRICS_PORT = 0

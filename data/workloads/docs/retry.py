import random
import time


def retry(fn, attempts=5, base_delay=0.1, max_delay=5.0):
    """Call fn until it succeeds, sleeping with jittered exponential backoff."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception:
            if attempt == attempts - 1:
                raise
            delay = min(max_delay, base_delay * 2 ** attempt)
            time.sleep(delay * random.uniform(0.5, 1.0))

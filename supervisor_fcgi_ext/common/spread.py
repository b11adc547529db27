"""How evenly requests spread over a pool's workers.

Jain's fairness index J = (sum x)^2 / (n * sum x^2) lies in [1/n, 1]; n*J is the
number of workers effectively used.  Balance is max/mean (HAProxy's balance
factor): 1.0 is perfect, n means one worker took everything.  Both are
reported next to the best value reachable for that many requests (10 requests
cannot spread perfectly over 6 workers) and the value uniform random choice
would give, so a reader can tell a good spread from luck.
"""

import random

__all__ = ['jain_index', 'balance', 'best_split', 'random_means', 'summarize']


def jain_index(counts):
    """Jain's index of counts; 0.0 when nothing was counted (undefined)."""
    counts = list(counts)
    total = sum(counts)
    squares = sum(c * c for c in counts)
    if not counts or squares == 0:
        return 0.0
    return total * total / (len(counts) * squares)


def balance(counts):
    """max/mean of counts; 0.0 when nothing was counted."""
    counts = list(counts)
    total = sum(counts)
    if not counts or total == 0:
        return 0.0
    return max(counts) * len(counts) / total


def best_split(requests, workers):
    """The most even split of requests over workers (what FIFO accept gives)."""
    if workers <= 0:
        return []
    share, extra = divmod(requests, workers)
    return [share + 1] * extra + [share] * (workers - extra)


def random_means(requests, workers, seed=1):
    """(mean Jain index, mean balance) when each request picks a worker
    uniformly at random.

    Estimated by simulation with a fixed seed, so the figures are the same on
    every run and machine; the trial count shrinks for large runs to keep the
    cost near 0.1 s.
    """
    if workers <= 0 or requests <= 0:
        return 0.0, 0.0
    trials = min(2000, max(100, 400000 // requests))
    rng = random.Random(seed)
    jain_total = balance_total = 0.0
    for _ in range(trials):
        counts = [0] * workers
        for _ in range(requests):
            counts[rng.randrange(workers)] += 1
        jain_total += jain_index(counts)
        balance_total += balance(counts)
    return jain_total / trials, balance_total / trials


def summarize(counts):
    """Fairness figures of one distribution next to the best and the random."""
    counts = list(counts)
    requests, workers = sum(counts), len(counts)
    best = best_split(requests, workers)
    random_fairness, random_spread = random_means(requests, workers)
    return {
        'fairness': jain_index(counts),
        'balance': balance(counts),
        'best_fairness': jain_index(best),
        'best_balance': balance(best),
        'random_fairness': random_fairness,
        'random_balance': random_spread,
        'effective_workers': jain_index(counts) * workers,
    }

import unittest

from supervisor_fcgi_ext.common import spread


class JainIndexTests(unittest.TestCase):
    def test_even_split_is_one(self):
        self.assertEqual(spread.jain_index([3, 3, 3]), 1.0)

    def test_one_worker_takes_all_is_one_over_n(self):
        self.assertAlmostEqual(spread.jain_index([6, 0, 0, 0, 0, 0]), 1 / 6)

    def test_design_figures(self):
        # DESIGN.md section 4: EPOLLEXCLUSIVE split 6,3,1,0,0,0 -> 0.36
        self.assertAlmostEqual(spread.jain_index([6, 3, 1, 0, 0, 0]), 0.3623, 4)

    def test_nothing_counted_is_zero(self):
        self.assertEqual(spread.jain_index([0, 0]), 0.0)
        self.assertEqual(spread.jain_index([]), 0.0)


class BalanceTests(unittest.TestCase):
    def test_max_over_mean(self):
        self.assertEqual(spread.balance([2, 2, 2, 2, 1, 1]), 1.2)

    def test_empty(self):
        self.assertEqual(spread.balance([]), 0.0)
        self.assertEqual(spread.balance([0, 0]), 0.0)


class ReferenceFigureTests(unittest.TestCase):
    def test_best_split_of_ten_over_six(self):
        self.assertEqual(spread.best_split(10, 6), [2, 2, 2, 2, 1, 1])
        self.assertAlmostEqual(spread.jain_index(spread.best_split(10, 6)), 0.9259, 4)

    def test_random_expectation_of_ten_over_six_is_about_069(self):
        self.assertAlmostEqual(spread.random_means(10, 6)[0], 0.69, 1)

    def test_random_expectation_is_repeatable_and_below_best(self):
        self.assertEqual(spread.random_means(200, 6), spread.random_means(200, 6))
        self.assertLess(spread.random_means(200, 6)[0],
                        spread.jain_index(spread.best_split(200, 6)))

    def test_random_balance_is_repeatable_and_between_best_and_worst(self):
        value = spread.random_means(10, 6)[1]
        self.assertEqual(value, spread.random_means(10, 6)[1])
        self.assertTrue(1.2 < value < 6)
        self.assertTrue(1.0 < spread.random_means(200, 6)[1] < value)
        self.assertEqual(spread.random_means(5, 1)[1], 1.0)

    def test_summarize(self):
        summary = spread.summarize([2, 2, 2, 2, 1, 1])
        self.assertAlmostEqual(summary['fairness'], summary['best_fairness'])
        self.assertAlmostEqual(summary['effective_workers'], 6 * 0.9259, 3)
        self.assertEqual(summary['best_balance'], 1.2)
        self.assertGreater(summary['random_balance'], 1.2)

"""Joint training, the upper bound: at every task the network trains on all data seen so far.

Unlike mammoth's ``joint`` (which trains once, after the last task), every row of the accuracy
matrix is a real upper bound for that step; the cost grows with the number of tasks.

Deviations from the reference:
- Trains on the union of the seen tasks at every task (an upper-bound row per step); mammoth's ``joint``
  trains once, on every task's data, after the last task.
"""
from models.sgd import Sgd


class Joint(Sgd):
    NAME = "joint"
    TRAIN_ON_ALL_SEEN_TASKS = True

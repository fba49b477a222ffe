"""The README's third-party defense example, kept runnable: a test ranks it through a suite."""

import torch

from bench.defenses import InputDefense


class MyRecoding(InputDefense):
    name = "my-recoding"
    description = "one line for `authbench list defenses`"
    defaults = {"dims": 8, "code": "instance"}

    def fit(self, authorized, probe=None):
        self._fl = authorized.first_linear()      # W (pixel space) and its unfold/fold map
        _, _, vh = torch.linalg.svd(self._fl.matrix, full_matrices=True)
        self._basis = vh[-self.params["dims"]:].T  # least sensitive patch directions; never written out

    def directions(self, x, indices, labels, seed):
        # one direction per sample; the engine scales it to the target PSNR and applies the release format
        positions = self._fl.unfold(x[:1].double()).shape[-1]
        z = [torch.randn(self._basis.shape[1], positions, generator=self.code_generator(seed, int(i), int(y)),
                         dtype=torch.float64) for i, y in zip(indices, labels)]
        return self._fl.fold(torch.stack([self._basis @ zi for zi in z]))

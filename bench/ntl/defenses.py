"""The defenses of the non-transferable-learning family (the `domain` protocol, bench.protocols.domain).

A `DomainDefense` trains a fresh network of one architecture on the authorized (source) domain, seeing the
unauthorized (target) domains' training images as its method requires, and returns the trained module; the
protocol scores it on every domain's test images and under the standard attacks (bench.ntl.attacks).

- `plain`: ordinary training on the source domain only (the reference every NTL method is compared with);
- `ntl`: Non-Transferable Learning, target-specified (bench.ntl.methods.train_ntl; the public code's objective);
- `cuti`: target-specified CUTI-domain (bench.ntl.methods.train_cuti);
- `sophon`: SOPHON non-fine-tunable learning, the restricted domain = the targets (bench.ntl.methods.train_sophon).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from bench.defenses.base import DEFENSES, Defense
from bench.ntl.methods import train_cuti, train_ntl, train_sophon, train_supervised

PROTOCOL = "domain"


@dataclass(frozen=True, kw_only=True)
class DomainData:
    """Images of one domain (pixel space [0, 1], N x C x H x W) with their labels."""

    images: torch.Tensor
    labels: torch.Tensor


class DomainDefense(Defense):
    """Trains a network that keeps the source domain; `train(module, source, target, seed)` returns it trained.
    `module` is a fresh network (the protocol builds it from the entry's architecture), `preprocess` maps
    pixels to its input; `target` holds the unauthorized domains' training images (and their labels, which a
    target-specified method reads)."""

    protocol = PROTOCOL
    trains = True
    defaults = {"epochs": 10, "lr": 1e-3, "batch": 64}
    param_schema = {"epochs": {"type": "integer", "minimum": 1}, "lr": {"type": "number", "exclusiveMinimum": 0},
                    "batch": {"type": "integer", "minimum": 1}}

    def train(self, module: nn.Module, preprocess, source: DomainData, target: DomainData, num_classes: int,
              seed: int) -> nn.Module:
        raise NotImplementedError


@DEFENSES.register
class Plain(DomainDefense):
    name = "plain"
    description = "ordinary training on the source domain only (the reference of the non-transferable-learning board)"

    def train(self, module, preprocess, source, target, num_classes, seed):
        p = self.params
        return train_supervised(module, preprocess, source.images, source.labels, epochs=int(p["epochs"]), lr=float(p["lr"]),
                           seed=seed, batch=int(p["batch"]))


@DEFENSES.register
class NTL(DomainDefense):
    name = "ntl"
    description = ("Non-Transferable Learning, target-specified (Wang, Xu, Xu, Wang & Zhu, ICLR 2022): source KL minus "
                   "the clipped target KL times the clipped feature MMD (the public code's objective)")
    paper = {"authors": "Lixu Wang, Shichao Xu, Ruiqi Xu, Xiao Wang, Qi Zhu",
             "title": "Non-Transferable Learning: A New Approach for Model Ownership Verification and Applicability "
                      "Authorization", "venue": "ICLR 2022", "link": "https://github.com/conditionWang/NTL"}
    defaults = {**DomainDefense.defaults, "alpha": 0.1, "beta": 0.1}
    param_schema = {**DomainDefense.param_schema, "alpha": {"type": "number", "minimum": 0},
                    "beta": {"type": "number", "minimum": 0}}

    def train(self, module, preprocess, source, target, num_classes, seed):
        p = self.params
        return train_ntl(module, preprocess, source.images, source.labels, target.images, target.labels, num_classes,
                         epochs=int(p["epochs"]), lr=float(p["lr"]), seed=seed, alpha=float(p["alpha"]),
                         beta=float(p["beta"]), batch=int(p["batch"]))


@DEFENSES.register
class CUTI(DomainDefense):
    name = "cuti"
    description = ("CUTI-domain, target-specified (Wang, Wang, Zhang & Fu, CVPR 2023): NTL's target term, every second step "
                   "on target features restyled with the source's instance statistics")
    paper = {"authors": "Lianyu Wang, Meng Wang, Daoqiang Zhang, Huazhu Fu",
             "title": "Model Barrier: A Compact Un-Transferable Isolation Domain for Model Intellectual Property "
                      "Protection", "venue": "CVPR 2023", "link": "https://github.com/LyWang12/CUTI-Domain"}
    defaults = {**DomainDefense.defaults, "alpha": 0.1, "clip": 1.0, "lr_decay": 0.999, "every": 2}
    param_schema = {**DomainDefense.param_schema, "alpha": {"type": "number", "minimum": 0},
                    "clip": {"type": "number", "exclusiveMinimum": 0},
                    "lr_decay": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    "every": {"type": "integer", "minimum": 1}}

    def train(self, module, preprocess, source, target, num_classes, seed):
        p = self.params
        return train_cuti(module, preprocess, source.images, source.labels, target.images, target.labels, num_classes,
                          epochs=int(p["epochs"]), lr=float(p["lr"]), seed=seed, alpha=float(p["alpha"]),
                          clip=float(p["clip"]), lr_decay=float(p["lr_decay"]), every=int(p["every"]),
                          batch=int(p["batch"]))


@DEFENSES.register
class Sophon(DomainDefense):
    name = "sophon"
    description = ("SOPHON non-fine-tunable learning (Deng et al., IEEE S&P 2024): simulated fine-tuning on the targets "
                   "(first-order MAML) whose outcome is suppressed, alternating with source training")
    paper = {"authors": "Jiangyi Deng, Shengyuan Pang, Yanjiao Chen, Liangming Xia, Yijie Bai, Haiqin Weng, Wenyuan Xu",
             "title": "SOPHON: Non-Fine-Tunable Learning to Restrain Task Transferability For Pre-trained Models",
             "venue": "IEEE S&P 2024", "link": "https://github.com/ChiangE/Sophon"}
    defaults = {**DomainDefense.defaults, "loops": 50, "inner_steps": 5, "inner_lr": 0.01, "alpha": 3.0, "beta": 5.0,
                "natural_steps": 1, "sophon_lr": 1e-3, "loss": "ice", "reinit_head": False}
    param_schema = {**DomainDefense.param_schema, "loops": {"type": "integer", "minimum": 0},
                    "inner_steps": {"type": "integer", "minimum": 1},
                    "inner_lr": {"type": "number", "exclusiveMinimum": 0},
                    "alpha": {"type": "number", "exclusiveMinimum": 0}, "beta": {"type": "number", "exclusiveMinimum": 0},
                    "natural_steps": {"type": "integer", "minimum": 0},
                    "sophon_lr": {"type": "number", "exclusiveMinimum": 0},
                    "loss": {"enum": ["ice", "ice-code", "klu"]}, "reinit_head": {"type": "boolean"}}

    def train(self, module, preprocess, source, target, num_classes, seed):
        p = self.params
        return train_sophon(module, preprocess, source.images, source.labels, target.images, target.labels, num_classes,
                            epochs=int(p["epochs"]), lr=float(p["lr"]), seed=seed, loops=int(p["loops"]),
                            inner_steps=int(p["inner_steps"]), inner_lr=float(p["inner_lr"]), alpha=float(p["alpha"]),
                            beta=float(p["beta"]), natural_steps=int(p["natural_steps"]), loss=str(p["loss"]),
                            reinit_head=bool(p["reinit_head"]), batch=int(p["batch"]), sophon_lr=float(p["sophon_lr"]))

"""Confusion-aware fusion weights: trust a teacher's prediction as much as it is likely to be right.

Beyond SAS. Guided fusion (SAS Eq. 7) scores teacher t at a point by ``sum_s S_t[c_s]``, a sum of
IoUs; this rule asks instead how likely the class each teacher predicts is the true one given what all
teachers predict (naive Bayes), from a per-teacher model ``L[t, k, j] = P(t predicts j | true class k,
t predicts something)`` (a teacher with no prediction at a point does not vote). Two models
(``GuidedFusionConfig.confusion_model``):

* ``accuracy`` (default; the "one-coin" model of Dawid & Skene 1979 per class): ``L[t, k, k] = a``
  with ``a = (1 - floor) * S_t[k] + floor / K`` from the capability IoU ``S_t[k]``, the rest of the
  row spread evenly, ``(1 - a) / (K - 1)``. K numbers per teacher, all that Eq. 7 already trusts. IoU
  (not recall, the textbook accuracy) because IoU also charges a class's false positives: the model
  spreads errors evenly and would otherwise not see that a teacher over-predicts a class.
* ``confusion``: the full probe confusion ``N[t, k, j]`` (mask pixels of true class k that teacher t
  predicts as j; :attr:`sas3d.capability.Capability.confusion`), ``L = (1 - floor) * N / row total +
  floor / K``. K x K numbers per teacher from a few probe images per class; their domain gap moves
  exactly these entries (README: 20 images per class put the LSeg-like chair -> sofa rate at 19 %
  where the scenes have 40 %, and the posterior then reads every chair as a sofa).

``floor`` spreads part of every row uniformly: the probe images are not the scenes, so no count is
trusted to say "never", and one teacher's vote can shift the odds by at most ~ K / floor. A class with
no probe images (the catch-all) has a uniform row in both models: nothing is known about it. Where a
voting teacher predicts such a class, the posterior is uninformed by construction, and the fusion
weights fall back to Eq. 7-8 (:func:`unscored`, applied in ``sas3d.fusion.guided``). Per point, with a
uniform prior over the K classes (the probe set is class-balanced; a scene's class frequencies are
unknown; mIoU weighs classes equally):

* ``posterior`` (naive Bayes over all seen teachers): ``P(y = k | c) ∝ prod_t L[t, k, c_t]``;
* ``precision`` (each teacher alone): ``P(y = c_t | c_t) = L[t, c_t, c_t] / sum_k L[t, k, c_t]``.

Each predicted class c gets the mass ``q_c ∝ P(c)^(1 / temperature)`` (renormalised over the classes
predicted at the point; ``temperature=1`` is the probability itself, towards 0 the most likely one
alone), shared equally by the teachers that predict c: ``w_t = q_{c_t} / #{s : c_s = c_t}``. So the
fused feature ``sum_t w_t f_t`` mixes the predicted classes' features in proportion to how likely each
is the true class, whatever the number of teachers that agree on it.
"""

from __future__ import annotations

import torch

from sas3d.errors import ConfigError

RULES = ("posterior", "precision")
MODELS = ("accuracy", "confusion")


def likelihoods(confusion: torch.Tensor, floor: float) -> torch.Tensor:
    """(T, K, K) ``L[t, k, j] = P(teacher t predicts j | true class k, t predicts something)`` from
    (T, K, K + 1) counts (last column: no prediction or a class outside the K), floored as in the module doc."""
    if confusion.ndim != 3 or confusion.shape[2] != confusion.shape[1] + 1:
        raise ConfigError(f"confusion has shape {tuple(confusion.shape)}, expected (T, K, K + 1)")
    if not 0 < floor <= 1:
        raise ConfigError(f"confusion_floor must be in (0, 1], got {floor}")
    counts = confusion[:, :, :-1].to(torch.float64)
    total = counts.sum(dim=2, keepdim=True)
    k = counts.shape[1]
    observed = torch.where(total > 0, counts / total.clamp_min(1e-12), torch.full_like(counts, 1.0 / k))
    return ((1.0 - floor) * observed + floor / k).to(torch.float32)


def accuracy_likelihoods(scores: torch.Tensor, confusion: torch.Tensor, floor: float) -> torch.Tensor:
    """(T, K, K) one-coin likelihoods from the (T, K) capability IoUs: ``a = (1 - floor) * S + floor / K`` on
    the diagonal, ``(1 - a) / (K - 1)`` elsewhere; uniform rows for the classes without probe images in
    the (T, K, K + 1) ``confusion`` (:func:`unscored`)."""
    if not 0 < floor <= 1:
        raise ConfigError(f"confusion_floor must be in (0, 1], got {floor}")
    scores = torch.as_tensor(scores, dtype=torch.float64)
    k = scores.shape[1]
    accuracy = (1.0 - floor) * scores + floor / k
    lik = ((1.0 - accuracy) / max(k - 1, 1))[:, :, None].expand(-1, -1, k).clone()
    lik.diagonal(dim1=1, dim2=2).copy_(accuracy)
    lik[unscored(confusion)] = 1.0 / k
    return lik.to(torch.float32)


def unscored(confusion: torch.Tensor) -> torch.Tensor:
    """(T, K) True where no probe pixel of class k got a prediction from teacher t (the catch-all, which has no
    probe images; a class outside the capability vocabulary): the model knows nothing of that class."""
    return torch.as_tensor(confusion)[:, :, :-1].sum(dim=2) == 0


def class_probabilities(pred: torch.Tensor, valid: torch.Tensor, likelihood: torch.Tensor, rule: str) -> torch.Tensor:
    """(n, T) probability that the class teacher t predicts at point n is the true one (0 where t does not vote).

    ``pred`` (n, T) predicted class per teacher, ``valid`` (n, T) whether it votes, ``likelihood`` (T, K, K)."""
    n_teachers = likelihood.shape[0]
    t_index = torch.arange(n_teachers)[None, :]
    if rule == "precision":
        column = likelihood[t_index, :, pred]  # (n, T, K): L[t, k, c_t] for every true class k
        own = column.gather(2, pred[:, :, None]).squeeze(2)
        return own / column.sum(dim=2) * valid
    if rule != "posterior":
        raise ConfigError(f"confusion rule must be one of {', '.join(RULES)}, got {rule!r}")
    log_l = likelihood.clamp_min(1e-30).log()[t_index, :, pred]  # (n, T, K): log L[t, k, c_t]
    log_post = (log_l * valid[:, :, None]).sum(dim=1)  # uniform prior: a constant
    post = torch.softmax(log_post, dim=1)  # (n, K)
    return post.gather(1, pred) * valid


def teacher_weights(pred: torch.Tensor, valid: torch.Tensor, likelihood: torch.Tensor, rule: str,
                    temperature: float) -> torch.Tensor:
    """(n, T) fusion weights summing to 1 over the voting teachers (0 elsewhere), as in the module doc."""
    if temperature <= 0:
        raise ConfigError(f"confusion_temperature must be > 0, got {temperature}")
    valid_f = valid.to(torch.float32)
    prob = class_probabilities(pred, valid_f, likelihood, rule)
    # Sharpen in log space (a probability can underflow to 0 when raised to 1 / temperature).
    log_q = torch.where(valid, prob.clamp_min(1e-30).log() / temperature, torch.full_like(prob, float("-inf")))
    same = (pred[:, :, None] == pred[:, None, :]) & valid[:, :, None] & valid[:, None, :]  # (n, T, T)
    sharers = same.sum(dim=2).clamp_min(1).to(torch.float32)  # teachers predicting c_t (incl. t)
    # One term per predicted class: each class's log q is counted once by dividing by its sharers.
    first = valid & ~(same & torch.ones_like(same).tril(-1).bool()).any(dim=2)  # first teacher of each class
    shift = log_q.masked_fill(~valid, float("-inf")).amax(dim=1, keepdim=True)
    q = torch.exp(log_q - shift.clamp_min(-1e30)) * valid_f
    total = (q * first).sum(dim=1, keepdim=True)
    w = torch.where(total > 0, q / total.clamp_min(1e-30) / sharers, torch.zeros_like(q))
    return torch.nan_to_num(w, nan=0.0)

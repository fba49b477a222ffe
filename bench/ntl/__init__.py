"""Non-transferable learning (issue 23, family 1): training-time model authorization. A model keeps its
accuracy on the authorized (source) domain and loses it on unauthorized (target) domains.

`domains` builds offline domain shifts of the shipped digits; `methods` holds the training objectives."""

"""Attention, explained: head loadings of graph edges and QK attributions of attention scores."""

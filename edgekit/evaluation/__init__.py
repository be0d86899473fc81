"""The measuring stick: perplexity and zero-shot multiple choice on any causal LM."""

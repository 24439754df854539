"""The read side: shop.v1.QueryService over Redis projections, read models and write tables."""

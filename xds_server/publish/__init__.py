"""Last good config wins: the publisher and the validators that judge a candidate first."""

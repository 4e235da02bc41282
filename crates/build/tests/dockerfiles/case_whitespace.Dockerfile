FROM	alpine	 AS	Base 
  run   echo crlf line endings \
   continued
	Env k=v
workdir	/a b c 
user 1000:1000

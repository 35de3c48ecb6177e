package notifier_test

import amqp "github.com/rabbitmq/amqp091-go"

func amqp091Publishing(body []byte) amqp.Publishing {
	return amqp.Publishing{ContentType: "application/json", Body: body}
}
